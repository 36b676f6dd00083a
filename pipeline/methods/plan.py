"""A session's plan, from file lists alone (no image decoded yet): the classes, the training files, how batches
are drawn from them and for how many iterations, at which hyperparameters, and whether the session continues the
parent's weights. Each method brings its plan: an update (sgm, vanilla) rehearses from all old data with a fixed
share of new samples in every batch and a budget that follows the new data; the retrain takes epochs over all
data from the pretrained start, the warm start the same from the parent's weights. `auto` plans an update and the
retrain and keeps the cheaper."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

import torch

from pipeline.config import Params, TrainParams, UpdateParams
from pipeline.data import DataDiff, Manifest
from pipeline.model import Classifier

log = logging.getLogger("pipeline")
AUTO = "auto"  # update.method / --method: the cheaper of an sgm update and the retrain


@dataclass(frozen=True)
class Parent:
    """The model a session starts from, and what arrived since its data version."""

    path: Path
    model: Classifier
    card: dict
    manifest: Manifest
    diff: DataDiff


@dataclass(frozen=True)
class Plan:
    method: str
    hyper: TrainParams | UpdateParams  # batch size, schedule shares, precision (the method reads its rates)
    class_names: list[str]  # the parent's, then the new ones
    n_old: int  # the parent's classes (all of them for a first model)
    entries: list[tuple[str, str]]  # training files: (relative path, class)
    budget: int  # iterations
    draw: Callable[[torch.Generator], Iterator[torch.Tensor]]  # batches of row indices into `entries`
    from_parent: bool  # trains the parent's weights (an update), or a fresh model from the pretrained start
    choice: dict | None = None  # `auto`'s comparison, when it chose

    @property
    def samples(self) -> int:
        return self.budget * self.hyper.batch_size


def class_names(manifest: Manifest, parent: Parent | None) -> tuple[list[str], int]:
    """The session's classes: the parent's in its order, then the new ones; and how many are the parent's."""
    if parent is None:
        return manifest.classes(), len(manifest.classes())
    return parent.card["class_names"] + parent.diff.new_classes, len(parent.card["class_names"])


# ---- the retrain ---------------------------------------------------------------------------------------

def plan_retrain(params: Params, manifest: Manifest, parent: Parent | None) -> Plan:
    """`train.epochs` passes over every training file in shuffled full batches, from the pretrained start."""
    names, n_old = class_names(manifest, parent)
    entries, p = manifest.entries("train"), params.train
    return Plan("retrain", p, names, n_old, entries, math.ceil(p.epochs * len(entries) / p.batch_size),
                partial(epoch_batches, len(entries), p.batch_size), from_parent=False)


def plan_warm_start(params: Params, manifest: Manifest, parent: Parent) -> Plan:
    """The retrain's plan from the parent's weights: `train.epochs` passes over every training file (the baseline
    beside an update that a fine-tuning team would run)."""
    return replace(plan_retrain(params, manifest, parent), method="warm_start", from_parent=True)


def epoch_batches(n: int, batch_size: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
    while True:
        order = torch.randperm(n, generator=generator)
        yield from (order[i:i + batch_size] for i in range(0, n - batch_size + 1, batch_size))


# ---- an update -----------------------------------------------------------------------------------------

def plan_update(method: str, params: Params, manifest: Manifest, parent: Parent) -> Plan:
    """Every file new since the parent plus the old ones (`update.rehearsal_per_class`), drawn with replacement
    by `sampling_weights`, for `update.new_data_passes` passes over the new files."""
    names, n_old = class_names(manifest, parent)
    p = params.update
    entries, fresh = rehearsal_pool(manifest, parent.manifest, names, p.rehearsal_per_class, params.seed)
    position = {name: i for i, name in enumerate(names)}
    targets = torch.tensor([position[c] for _, c in entries], dtype=torch.long)
    weights = sampling_weights(targets, fresh, p.new_class_share, p.new_share)
    return Plan(method, p, names, n_old, entries, update_budget(p, weights, fresh),
                partial(weighted_batches, weights, p.batch_size), from_parent=True)


def rehearsal_pool(manifest: Manifest, parent: Manifest, class_names: list[str], per_class: int | None,
                   seed: int) -> tuple[list[tuple[str, str]], torch.Tensor]:
    """All train files new since the parent's version, plus up to `per_class` known files per old class (None:
    all of them; DVC keeps every version, and the sampling weights fix the old data's share of a batch)."""
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


def sampling_weights(targets: torch.Tensor, fresh: torch.Tensor, new_class_share: float, new_share: float
                     ) -> torch.Tensor:
    """Per-sample draw probabilities for rehearsal batches. New classes (every sample of the class new since the
    parent) take `new_class_share` of each batch between them; the known classes share the rest equally, and inside
    a known class that got new files those take `new_share` of its draws. So one new class is a fixed share of a
    batch whatever the number of classes (a larger share, the paper's half or a quarter, lets a new class take over
    its look-alikes: docs/benchmarks.md); a class that grew alone keeps its share of the batch (its new files are
    not half of every batch); and rehearsing from all old data costs no more steps than from a small buffer."""
    labels = targets.unique().tolist()
    new = [label for label in labels if bool(fresh[targets == label].all())]
    known = [label for label in labels if label not in new]
    weights = torch.zeros(len(targets))
    for group, share in ((new, new_class_share if known else 1.0), (known, 1 - new_class_share if new else 1.0)):
        for label in group:
            members = targets == label
            cells = [(members & fresh, new_share), (members & ~fresh, 1 - new_share)]
            if not all(cell.any() for cell, _ in cells):
                cells = [(members, 1.0)]
            for cell, part in cells:
                weights[cell] = share / len(group) * part / cell.sum()
    return weights / weights.sum()


def weighted_batches(weights: torch.Tensor, batch_size: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
    while True:
        yield torch.multinomial(weights, batch_size, replacement=True, generator=generator)


def update_budget(p: UpdateParams, weights: torch.Tensor, fresh: torch.Tensor) -> int:
    """Iterations for `p.new_data_passes` passes over the new samples at the share of each batch they get,
    bounded by `min_iters` and `max_iters`."""
    share = float(weights[fresh].sum())
    if share == 0:
        return p.max_iters
    wanted = math.ceil(round(p.new_data_passes * int(fresh.sum()) / (p.batch_size * share), 3))  # float32 sums
    return min(max(wanted, p.min_iters, 1), p.max_iters)


# ---- auto ----------------------------------------------------------------------------------------------

def choose(update: Plan, retrain: Plan) -> Plan:
    """`update.method: auto`: the cheaper plan, in samples through the trainable layers (both train the same
    layers; LoRA's extra FLOPs per step are in the benchmark)."""
    chosen, other = (update, retrain) if update.samples <= retrain.samples else (retrain, update)
    name = {update.method: "update", retrain.method: "retrain"}
    log.info("path: %s (estimated samples: %s update %d, retrain %d)", chosen.method, update.method, update.samples,
             retrain.samples)
    choice = {"chosen": chosen.method, "estimated_samples": {update.method: update.samples,
                                                             retrain.method: retrain.samples},
              "reason": f"{name[chosen.method]} is cheaper: {chosen.samples} vs {other.samples} samples"}
    return replace(chosen, choice=choice)
