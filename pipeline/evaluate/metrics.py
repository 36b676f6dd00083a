"""Accuracy, stability-gap and flip metrics (names as defined in docs/design.md, "Metrics")."""

from __future__ import annotations

import torch

from pipeline.data import ImageSet
from pipeline.model.classifier import INFERENCE_BATCH

RECOVERED_WITHIN = 1.0  # points: the old classes count as recovered once back within this of their final accuracy


@torch.no_grad()
def logits_of(model, data: ImageSet, batch_size: int = INFERENCE_BATCH) -> torch.Tensor:
    """The model's outputs per sample, fp32 on the CPU (eval mode, restored)."""
    was_training = model.training
    model.eval()
    rows = [model(model.normalize(data.images[i:i + batch_size])).float().cpu()
            for i in range(0, len(data), batch_size)]
    model.train(was_training)
    return torch.cat(rows) if rows else torch.empty(0, 0)


def predict(model, data: ImageSet, batch_size: int = INFERENCE_BATCH, among: int | None = None) -> torch.Tensor:
    """Predicted class index per sample; `among`=k: the best of the first k classes only."""
    return top_class(logits_of(model, data, batch_size), among)


def top_class(logits: torch.Tensor, among: int | None = None) -> torch.Tensor:
    """The best class per row (`among`=k: of the first k only)."""
    return logits[:, :among].argmax(1) if len(logits) else torch.empty(0, dtype=torch.long)


def _pct(mask: torch.Tensor) -> float | None:
    """Percent of True; None when there is nothing to measure (e.g. no new classes), never NaN in JSON."""
    return round(100.0 * mask.float().mean().item(), 2) if mask.numel() else None


def accuracy_report(preds: torch.Tensor, targets: torch.Tensor, class_names: list[str], n_old: int) -> dict:
    """old/new/all accuracy (percent) and per-class accuracy; classes [0, n_old) are the old ones."""
    correct = preds == targets
    old = targets < n_old
    return {
        "old_acc": _pct(correct[old]),
        "new_acc": _pct(correct[~old]),
        "all_acc": _pct(correct),
        "per_class_acc": {name: _pct(correct[targets == i]) for i, name in enumerate(class_names)
                          if (targets == i).any()},
    }


def negative_flip_rate(parent_preds: torch.Tensor, preds: torch.Tensor, targets: torch.Tensor, n_old: int) -> float:
    """Share (percent) of old-class samples the parent got right and the candidate gets wrong."""
    old = targets < n_old
    return _pct(((parent_preds == targets) & (preds != targets))[old])


def gap_metrics(curve: list[dict], old_acc_before: float, reference_old_acc: float | None = None) -> dict:
    """Stability-gap metrics from a continual-evaluation curve (rows with iteration and old_acc).

    `gap_S` is the paper's normalised gap, referenced to the standard retrain's old-class accuracy (given when
    known, e.g. by a benchmark); `gap_S_parent` is the same referenced to the parent's accuracy."""
    old = [row["old_acc"] for row in curve]
    min_index = min(range(len(old)), key=old.__getitem__)
    final = old[-1]
    recovered = next(i for i in range(min_index, len(old)) if old[i] >= final - RECOVERED_WITHIN)
    metrics = {
        "old_acc_before_eval": old_acc_before,
        "min_old_acc": old[min_index],
        "min_acc": old[min_index],  # De Lange et al.'s min-ACC: the lowest old-class accuracy, absolute
        "min_old_acc_iter": curve[min_index]["iteration"],
        "final_old_acc_eval": final,
        "stability_gap": round(old_acc_before - old[min_index], 2),
        "transient_gap": round(final - old[min_index], 2),
        "recovery_iters": curve[recovered]["iteration"],
        "gap_S_parent": round(1.0 - sum(a / old_acc_before for a in old) / len(old), 4),
    }
    if reference_old_acc:
        metrics["gap_S"] = round(1.0 - sum(a / reference_old_acc for a in old) / len(old), 4)
    return metrics
