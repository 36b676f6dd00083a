"""The update recipe, top to bottom: load parent -> diff data -> prepare method -> train with continual
evaluation and the gap-aware stop -> merge -> evaluate on the full test split -> write the candidate."""

from __future__ import annotations

import json
import logging
import math
import resource
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from pipeline.config import Params, UpdateParams
from pipeline.data import ImageSet, Manifest, build_manifest, diff_manifests
from pipeline.data.imagefolder import DataError
from pipeline.evaluate import ContinualEvaluator, accuracy_report, gap_metrics, negative_flip_rate, predict
from pipeline.faults import crash_point
from pipeline.methods import Session, get_method
from pipeline.model import (
    Classifier,
    build_classifier,
    check_backbone,
    check_free,
    grow_head,
    load_model,
    save_model,
    trainable_groups,
)
from pipeline.model.trunk import Trunk
from pipeline.train import distributed
from pipeline.train.features import FeatureCache

log = logging.getLogger("pipeline")
MANIFEST = "manifest.json"


# ---- batches -------------------------------------------------------------------------------------------

def balanced_batches(targets: torch.Tensor, fresh: torch.Tensor, batch_size: int, new_share: float | None,
                     generator: torch.Generator) -> Iterator[torch.Tensor]:
    """Rehearsal batches: class-balanced over all classes, or `new_share` of each batch from fresh samples."""
    if new_share is None or fresh.all() or not fresh.any():
        weights = 1.0 / torch.bincount(targets).float()[targets]
    else:
        weights = torch.where(fresh, new_share / fresh.sum(), (1 - new_share) / (~fresh).sum())
    while True:
        yield torch.multinomial(weights, batch_size, replacement=True, generator=generator)


def epoch_batches(n: int, batch_size: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
    while True:
        order = torch.randperm(n, generator=generator)
        yield from (order[i:i + batch_size] for i in range(0, n - batch_size + 1, batch_size))


# ---- stopping ------------------------------------------------------------------------------------------

class GapAwareStop:
    """Stop once neither new- nor old-class accuracy has gained `stop_min_gain` points for `stop_patience`
    evaluations: new classes learnt, old classes no longer recovering from the dip."""

    def __init__(self, params: UpdateParams, old_acc_before: float):
        self.params, self.old_acc_before = params, old_acc_before
        self.best_new, self.best_old, self.stale = -math.inf, -math.inf, 0

    def __call__(self, row: dict) -> str | None:
        p = self.params
        new = row["all_acc"] if row["new_acc"] is None else row["new_acc"]
        gained = new >= self.best_new + p.stop_min_gain or row["old_acc"] >= self.best_old + p.stop_min_gain
        self.best_new, self.best_old = max(self.best_new, new), max(self.best_old, row["old_acc"])
        if row["iteration"] < p.min_iters:
            return None
        self.stale = 0 if gained else self.stale + 1
        if self.stale < p.stop_patience:
            return None
        below = self.old_acc_before - row["old_acc"]
        return (f"plateau: no class group gained {p.stop_min_gain} points in {p.stop_patience} evaluations; "
                f"old-class accuracy {row['old_acc']} is " + ("within tolerance of" if below <= p.stop_old_tolerance
                                                              else f"{below:.1f} points below") +
                f" the parent's {self.old_acc_before}")


# ---- the loop ------------------------------------------------------------------------------------------

def step_flops(session: Session, classifier: Classifier, images: torch.Tensor) -> int:
    """FLOPs of one training step: the forward pass counted by torch's FLOP counter, backward taken as 2x
    forward (torch's counter over-counts depthwise-conv backward about 14x: 168 vs 12 GFLOPs measured)."""
    was_training = session.model.training
    session.model.eval()  # a train-mode forward would move BatchNorm running statistics towards this one batch
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        session.model(classifier.normalize(images))
    session.model.train(was_training)
    return 3 * counter.get_total_flops()


def train_loop(session: Session, classifier: Classifier, pool: ImageSet, batches: Iterator[torch.Tensor],
               max_iters: int, evaluator: ContinualEvaluator, warmup_share: float, stop=None) -> dict:
    optimizer = session.optimizer
    scheduler = (torch.optim.lr_scheduler.OneCycleLR(  # a warm-up of at least 2 steps (1 divides by zero)
        optimizer, max_lr=[g["lr"] for g in optimizer.param_groups], total_steps=max_iters,
        pct_start=max(warmup_share, 2 / max_iters)) if max_iters >= 3
        else torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0))
    session.model.train()
    model, rank, world = distributed.wrap(session.model), distributed.rank(), distributed.world()
    main = rank == 0
    train_s, iteration, reason = 0.0, 0, f"max_iters ({max_iters})"
    if main:
        evaluator(session.model, 0, 0.0)
    while iteration < max_iters:
        start = time.perf_counter()
        index = next(batches)[rank::world]  # this rank's slice of the global batch
        logits = model(classifier.normalize(pool.images[index]))
        loss = session.loss(logits, pool.targets[index])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        session.after_step()
        iteration += 1
        train_s += time.perf_counter() - start
        crash_point(f"train:step{iteration}")
        if not torch.isfinite(loss):
            raise FloatingPointError(f"loss became {loss.item()} at iteration {iteration}; lower the learning rate")
        if evaluator.due(iteration) or iteration == max_iters:
            why = None
            if main:
                row = evaluator(session.model, iteration, train_s)
                log.info("iter %4d  loss %.3f  old %s  new %s  all %s", iteration, loss.item(),
                         row["old_acc"], row["new_acc"], row["all_acc"])
                why = stop(row) if stop else None
            if distributed.decided_on_rank0(why is not None):
                reason = why or "stopped by rank 0"
                break
    if main and evaluator.rows[-1]["iteration"] != iteration:
        evaluator(session.model, iteration, train_s)
    return {"iterations": iteration, "train_s": round(train_s, 2), "stop_reason": reason}


# ---- data ----------------------------------------------------------------------------------------------

def scan_version(data_root: Path, manifest: Manifest | None = None) -> Manifest:
    manifest = manifest or build_manifest(data_root)
    if problems := manifest.problems():
        raise DataError(f"refusing to train on {data_root}:\n  - " + "\n  - ".join(problems))
    return manifest


def rehearsal_pool(manifest: Manifest, parent: Manifest, class_names: list[str], per_class: int,
                   seed: int) -> tuple[list[tuple[str, str]], torch.Tensor]:
    """All train files new since the parent's version, plus up to `per_class` known files per old class."""
    known = {digest for _, digest in parent.files["train"].values()}
    fresh, old = [], {}
    for path, (name, digest) in sorted(manifest.files["train"].items()):
        (old.setdefault(name, []) if digest in known else fresh).append((path, name))
    generator = torch.Generator().manual_seed(seed)
    kept = []
    for name in class_names:
        entries = old.get(name, [])
        kept += [entries[i] for i in torch.randperm(len(entries), generator=generator)[:per_class]]
    return kept + fresh, torch.tensor([False] * len(kept) + [True] * len(fresh))


def _split(model: Classifier, params: Params, features: FeatureCache | None) -> Trunk | None:
    if features is None:
        return None
    trunk = Trunk.split(model, trainable_groups(model, params.model.frozen_groups), params.model.img_size)
    if trunk is None:
        log.info("feature cache off: %s has no frozen trunk to cache at model.frozen_groups=%d",
                 params.model.backbone, params.model.frozen_groups)
    return trunk


def _load(model: Classifier, params: Params, features: FeatureCache | None, data_root: Path, manifest: Manifest,
          train_entries: list[tuple[str, str]], class_names: list[str]) -> tuple[Trunk | None, ImageSet, ImageSet]:
    """Training and test inputs: decoded images, or cached trunk features (computed only for images the cache
    has not seen) with the trunk attached to `model`."""
    trunk, size = _split(model, params, features), params.model.img_size

    def load(entries: list[tuple[str, str]]) -> ImageSet:
        if trunk is None:
            return ImageSet.load(data_root, entries, class_names, size)
        hashed = [(p, c, manifest.files[p.partition("/")[0]][p][1]) for p, c in entries]  # "<split>/<class>/<f>"
        return features.load(model, trunk, data_root, hashed, class_names, size)

    pool, test = load(train_entries), load(manifest.entries("test"))
    if trunk:
        trunk.attach(model)
    return trunk, pool, test


def _peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def _write(out: Path, model: Classifier, card: dict, metrics: dict, evaluator: ContinualEvaluator,
           manifest: Manifest) -> None:
    card = {**card, "metrics": {k: v for k, v in metrics.items() if not isinstance(v, dict)},
            "created_at": datetime.now(UTC).isoformat(timespec="seconds")}
    save_model(out, model, card, {"metrics.json": json.dumps(metrics, indent=2), "curve.csv": evaluator.csv(),
                                  MANIFEST: manifest.to_json()})
    log.info("wrote %s", out)


def _card(params: Params, class_names: list[str], old_classes: list[str], method: str, manifest: Manifest,
          parent: dict | None, data_version: str | None) -> dict:
    return {"class_names": class_names, "old_classes": old_classes, "model": params.model.model_dump(),
            "method": method, "data_version": data_version, "manifest_digest": manifest.digest(), "parent": parent,
            "params": params.model_dump(), "params_hash": params.digest()}


# ---- entry points --------------------------------------------------------------------------------------

def train(data_root: Path, out: Path, params: Params, parent_dir: Path | None = None,
          data_version: str | None = None, manifest: Manifest | None = None,
          features: FeatureCache | None = None) -> dict:
    """Full training from the pretrained start on all data (the base model, or `joint` beside an update).

    `data_version` (DVC's md5 of the folder, when tracked) goes into the card for the next run to compare;
    `manifest`: the folder's manifest when the caller built it already (hashing every file is not free);
    `features`: a frozen-trunk feature cache (same results, the trunk computed once per image)."""
    wall = time.perf_counter()
    check_free(out)  # before training, not after
    check_backbone(params.model.backbone)
    torch.manual_seed(params.seed)
    manifest = scan_version(data_root, manifest)
    parent, parent_card = load_model(parent_dir) if parent_dir else (None, None)
    old_classes = parent_card["class_names"] if parent_card else manifest.classes()
    class_names = old_classes + sorted(set(manifest.classes()) - set(old_classes))
    log.info("loading %s (%d classes)", data_root, len(class_names))
    model = build_classifier(params.model, len(class_names))
    trunk, pool, test = _load(model, params, features, data_root, manifest, manifest.entries("train"), class_names)
    session = get_method("joint").prepare(model, len(old_classes), 0, pool, params)
    max_iters = math.ceil(params.train.epochs * len(pool) / params.train.batch_size)
    generator = torch.Generator().manual_seed(params.seed)
    batches = epoch_batches(len(pool), params.train.batch_size, generator)
    flops = step_flops(session, model, pool.images[:params.train.batch_size])
    evaluator = ContinualEvaluator(test, len(old_classes), params.eval, params.seed)
    log.info("training %s on %d images for %d iterations", params.model.backbone, len(pool), max_iters)
    loop = train_loop(session, model, pool, batches, max_iters, evaluator, params.train.warmup_share)
    if distributed.rank() != 0:  # rank 0 evaluates and writes the one checkpoint
        return loop

    preds = predict(model, test)
    metrics = {"method": "joint" if parent else "train", **loop, **accuracy_report_final(preds, test, old_classes),
               "samples_seen": loop["iterations"] * params.train.batch_size, "flops_per_step": flops,
               "train_flops": flops * loop["iterations"], "feature_cache": trunk is not None}
    if parent is not None:
        old_test = test.subset(test.targets < len(old_classes))
        if trunk and trunk == _split(parent, params, features):
            trunk.attach(parent)  # the same frozen trunk (no method trains it): the cached features serve both
        elif trunk:
            old_test = ImageSet.load(data_root, [e for e in manifest.entries("test") if e[1] in old_classes],
                                     class_names, params.model.img_size)
        parent_preds = predict(parent, old_test)
        metrics["negative_flip_rate"] = _flips(parent_preds, preds, test, len(old_classes))
    if trunk:
        trunk.detach(model)
    metrics.update(_costs(wall, evaluator))
    _write(out, session.finish(), _card(params, class_names, old_classes, metrics["method"], manifest,
                                        _parent_ref(parent_dir, parent_card), data_version), metrics, evaluator,
           manifest)
    return metrics


def update(parent_dir: Path, data_root: Path, out: Path, params: Params, method: str | None = None,
           data_version: str | None = None, manifest: Manifest | None = None,
           features: FeatureCache | None = None) -> dict:
    """Update the parent model on the data that arrived since its version (sgm / vanilla / joint)."""
    method = method or params.update.method
    if get_method(method).retrain:
        return train(data_root, out, params, parent_dir=parent_dir, data_version=data_version, manifest=manifest,
                     features=features)
    wall = time.perf_counter()
    check_free(out)  # before training, not after
    torch.manual_seed(params.seed)
    parent, parent_card = load_model(parent_dir)
    parent_manifest_path = Path(parent_dir) / MANIFEST
    if not parent_manifest_path.is_file():
        raise DataError(f"{parent_manifest_path} is missing: the parent records no data version to diff against")
    parent_manifest = Manifest.from_json(parent_manifest_path.read_text())
    manifest = manifest or build_manifest(data_root)
    diff = diff_manifests(parent_manifest, manifest)
    log.info("data diff: %s", diff.summary())
    diff.raise_if_refused()
    if diff.kind == "unchanged":
        raise DataError(f"{data_root} holds no new training data since {parent_dir}; nothing to update")

    old_classes = parent_card["class_names"]
    class_names = old_classes + diff.new_classes
    n_old = len(old_classes)
    entries, fresh = rehearsal_pool(manifest, parent_manifest, class_names,
                                    params.update.rehearsal_per_class, params.seed)
    log.info("loading %d training images (%d new) and the test split", len(entries), int(fresh.sum()))
    model = parent
    trunk, pool, test = _load(model, params, features, data_root, manifest, entries, class_names)
    old_test = test.subset(test.targets < n_old)

    evaluator = ContinualEvaluator(test, n_old, params.eval, params.seed)
    parent_preds = predict(parent, old_test)
    old_acc_before = accuracy_report(parent_preds, old_test.targets, old_classes, n_old)["old_acc"]
    eval_old = evaluator.subset.subset(evaluator.subset.targets < n_old)
    old_acc_before_eval = accuracy_report(predict(parent, eval_old), eval_old.targets, old_classes, n_old)["old_acc"]

    grow_head(model, len(diff.new_classes))
    session = get_method(method).prepare(model, n_old, n_old, pool, params)
    generator = torch.Generator().manual_seed(params.seed)
    p = params.update
    batches = balanced_batches(pool.targets, fresh, p.batch_size, p.new_share, generator)
    flops = step_flops(session, model, pool.images[:p.batch_size])
    log.info("%s update: %d old + %d new classes, parent old-class accuracy %.1f", method, n_old,
             len(diff.new_classes), old_acc_before)
    loop = train_loop(session, model, pool, batches, p.max_iters, evaluator, p.warmup_share,
                      stop=GapAwareStop(p, old_acc_before_eval))
    if distributed.rank() != 0:
        return loop
    final_model = session.finish()

    preds = predict(final_model, test)
    metrics = {"method": method, "kind": diff.kind, "new_classes": diff.new_classes,
               "new_samples": diff.new_samples, **loop, "old_acc_before": old_acc_before,
               **accuracy_report_final(preds, test, old_classes),
               "negative_flip_rate": _flips(parent_preds, preds, test, n_old),
               **gap_metrics(evaluator.rows, old_acc_before_eval), **session.info,
               "samples_seen": loop["iterations"] * p.batch_size, "flops_per_step": flops,
               "train_flops": flops * loop["iterations"], "feature_cache": trunk is not None}
    metrics.update(_costs(wall, evaluator))
    if trunk:
        trunk.detach(final_model)
    _write(out, final_model, _card(params, class_names, old_classes, method, manifest,
                                   _parent_ref(parent_dir, parent_card), data_version), metrics, evaluator, manifest)
    return metrics


def accuracy_report_final(preds: torch.Tensor, test: ImageSet, old_classes: list[str]) -> dict:
    report = accuracy_report(preds, test.targets, test.class_names, len(old_classes))
    return {"final_old_acc": report["old_acc"], "final_new_acc": report["new_acc"],
            "final_all_acc": report["all_acc"], "per_class_acc": report["per_class_acc"]}


def _flips(parent_preds: torch.Tensor, preds: torch.Tensor, test: ImageSet, n_old: int) -> float:
    old = test.targets < n_old
    return negative_flip_rate(parent_preds, preds[old], test.targets[old], n_old)


def _costs(wall_start: float, evaluator: ContinualEvaluator) -> dict:
    wall_s = time.perf_counter() - wall_start
    return {"wall_s": round(wall_s, 2), "eval_s": round(evaluator.seconds, 2),
            "eval_overhead": round(evaluator.seconds / wall_s, 4), "peak_rss_mb": _peak_rss_mb()}


def _parent_ref(parent_dir: Path | None, card: dict | None) -> dict | None:
    if card is None:
        return None
    return {"path": str(parent_dir), "weights_sha256": card["weights_sha256"],
            "data_version": card.get("data_version")}
