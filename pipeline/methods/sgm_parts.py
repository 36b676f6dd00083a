"""The four pieces of Stability Gap Mitigation (Harun & Kanan, TMLR 2024), as small components."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.model import Classifier

if TYPE_CHECKING:  # peft (and the transformers it imports) only when LoRA is on: 2 s of every process's start
    import peft

INIT_GRID = [2 ** (-step / 4) for step in range(41)]  # init scales tried, largest first: 2^(1/4) apart, to 2^-10


@torch.no_grad()
def data_driven_init(model: Classifier, new_features: torch.Tensor, new_labels: torch.Tensor,
                     old_features: torch.Tensor, old_labels: torch.Tensor, max_old_drop: float,
                     safety: float) -> dict:
    """New head rows = scale * mean of the L2-normalised embeddings of each new class.

    The literal mean can wreck old-class accuracy (every class mean points in a similar direction), so the
    scale is the largest on a 2^(1/4) grid whose old-class accuracy on rehearsal samples drops at most
    `max_old_drop` points, times `safety`: the parent saw these samples, so their margins are larger than on
    unseen data. New biases start at the old rows' mean bias.
    """
    head = model.head
    new_ids = new_labels.unique().tolist()
    means = torch.stack([F.normalize(new_features[new_labels == c], dim=1).mean(0) for c in new_ids])
    n_old = min(new_ids)
    old_logits = old_features @ head.weight[:n_old].T + head.bias[:n_old]
    acc_before = 100.0 * (old_logits.argmax(1) == old_labels).float().mean().item()
    new_bias = head.bias[:n_old].mean()
    largest = head.weight[:n_old].norm(dim=1).mean() / means.norm(dim=1).mean()
    chosen = 0.0
    for factor in INIT_GRID:
        scale = float(largest * factor)
        new_logits = scale * old_features @ means.T + new_bias
        acc = 100.0 * (torch.cat([old_logits, new_logits], 1).argmax(1) == old_labels).float().mean().item()
        if acc >= acc_before - max_old_drop:
            chosen = scale * safety
            break
    head.weight[new_ids] = chosen * means
    head.bias[new_ids] = new_bias
    return {"init_scale": round(chosen, 5)}


class DynamicSoftTargets:
    """Per-sample soft targets that shrink the early loss on new output units.

    Prior: for an old-class sample, the running mean of softmax outputs of correctly classified samples of its
    class this session (uniform until one is seen); for a new-class sample, its own detached prediction.
    The predicted class's entry is set to 1/K, the true class's to 1, and the vector renormalised.
    """

    def __init__(self, num_classes: int, n_old: int, device: torch.device | str = "cpu"):
        self.n_old = n_old
        self.sums = torch.zeros(n_old, num_classes, device=device)  # on the model's device
        self.counts = torch.zeros(n_old, device=device)

    def __call__(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        probs = logits.detach().float().softmax(1)
        num_classes = probs.shape[1]
        rows = torch.arange(len(targets), device=probs.device)
        predicted = probs.argmax(1)
        old = targets < self.n_old
        seen = self.counts > 0
        means = torch.where(seen[:, None], self.sums / self.counts.clamp(min=1)[:, None], 1.0 / num_classes)
        prior = probs.clone()
        prior[old] = means[targets[old]]
        prior[rows, predicted] = 1.0 / num_classes
        prior[rows, targets] = 1.0
        soft = prior / prior.sum(1, keepdim=True)
        hit = old & (predicted == targets)
        self.sums.index_add_(0, targets[hit], probs[hit])
        self.counts.index_add_(0, targets[hit], torch.ones(int(hit.sum()), device=probs.device))
        return soft


def soft_cross_entropy(logits: torch.Tensor, soft_targets: torch.Tensor) -> torch.Tensor:
    return -(soft_targets * logits.float().log_softmax(1)).sum(1).mean()


class WeightAverage:
    """An exponential moving average of the trainable weights (temporal ensembles, Soutif-Cormerais et al. 2023):
    it starts at the session's first weights, so the dip of the first steps reaches it damped. Evaluations see
    the average (`applied`), and `commit` makes it the weights the session ships."""

    def __init__(self, module: nn.Module, decay: float):
        self.decay = decay
        self.params = [p for p in module.parameters() if p.requires_grad]
        self.shadow = [p.detach().clone() for p in self.params]

    @torch.no_grad()
    def update(self) -> None:
        for average, param in zip(self.shadow, self.params, strict=True):
            average.lerp_(param, 1.0 - self.decay)

    @contextlib.contextmanager
    def applied(self) -> Iterator[None]:
        self._swap()
        try:
            yield
        finally:
            self._swap()

    @torch.no_grad()
    def _swap(self) -> None:
        for average, param in zip(self.shadow, self.params, strict=True):
            current = param.detach().clone()
            param.copy_(average)
            average.copy_(current)

    def commit(self) -> None:
        self._swap()


def lora_targets(model: Classifier, trainable_modules: list[str]) -> list[str]:
    """Linear and non-depthwise conv layers inside the trainable part of the backbone."""
    prefixes = tuple(f"backbone.{name}" for name in trainable_modules)
    return [name for name, module in model.named_modules()
            if name.startswith(prefixes) and (isinstance(module, nn.Linear)
                                              or (isinstance(module, nn.Conv2d) and module.groups == 1))]


def add_lora(model: Classifier, targets: list[str], rank: int, alpha: float, dropout: float) -> peft.PeftModel:
    """Fresh low-rank adapters on `targets`; every other weight is frozen by peft."""
    import peft

    config = peft.LoraConfig(target_modules=targets, r=rank, lora_alpha=alpha, lora_dropout=dropout)
    return peft.get_peft_model(model, config)


def merge_lora(wrapped: peft.PeftModel) -> Classifier:
    """Fold the adapters into the weights: the deployable model has no LoRA modules."""
    return wrapped.merge_and_unload()


class FrozenRows:
    """Keeps head rows [0, n) bit-identical: AdamW's decoupled weight decay would shrink them otherwise."""

    def __init__(self, head: nn.Linear, n: int):
        self.head, self.n = head, n
        self.weight = head.weight[:n].detach().clone()
        self.bias = head.bias[:n].detach().clone()

    @torch.no_grad()
    def restore(self) -> None:
        self.head.weight[: self.n] = self.weight
        self.head.bias[: self.n] = self.bias
