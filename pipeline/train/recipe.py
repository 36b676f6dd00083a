"""The one session, top to bottom (`update`; `train` is the same session with the standard retrain): load parent
-> diff data -> the session's data (rehearsal pool, validation slice, budget; or all data) -> prepare method ->
train with continual evaluation, the stop rule on the validation slice and a cooldown however it ends -> merge ->
evaluate on the full test split -> write the candidate."""

from __future__ import annotations

import contextlib
import json
import logging
import math
import resource
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from pipeline.config import Params, UpdateParams
from pipeline.data import DataDiff, ImageSet, Manifest, build_manifest, diff_manifests
from pipeline.data.imagefolder import DataError
from pipeline.device import autocast, describe, resolve_precision
from pipeline.evaluate import (
    ContinualEvaluator,
    accuracy_report,
    gap_metrics,
    logits_of,
    negative_flip_rate,
    predict,
    predict_cached,
)
from pipeline.evaluate.metrics import top_class
from pipeline.faults import crash_point
from pipeline.methods import Session, get_method
from pipeline.model import (
    Classifier,
    build_classifier,
    check_backbone,
    check_free,
    grow_head,
    load_card,
    load_model,
    save_model,
)
from pipeline.progress import Progress
from pipeline.train import distributed
from pipeline.train.inputs import Engine, Inputs, open_inputs

log = logging.getLogger("pipeline")
MANIFEST = "manifest.json"
AUTO = "auto"  # update.method / --method: the cheaper of an sgm update and the standard retrain
VAL_MAX_SHARE = 0.2  # the validation slice takes at most this share of a class's training samples


# ---- batches -------------------------------------------------------------------------------------------

def sampling_weights(targets: torch.Tensor, fresh: torch.Tensor, new_share: float) -> torch.Tensor:
    """Per-sample draw probabilities for rehearsal batches. New classes (every sample of the class new since the
    parent) take `new_share` of each batch between them (the paper's 1:1 mix); the known classes share the rest
    equally, and inside a known class that got new files those take `new_share` of its draws. So one new class is
    half of a batch, not 1/K of it; a class that grew alone keeps its share of the batch (its new files are not
    half of every batch); and rehearsing from all old data costs no more steps than from a small buffer."""
    labels = targets.unique().tolist()
    new = [label for label in labels if bool(fresh[targets == label].all())]
    known = [label for label in labels if label not in new]
    weights = torch.zeros(len(targets))
    for group, share in ((new, new_share if known else 1.0), (known, 1 - new_share if new else 1.0)):
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


def epoch_batches(n: int, batch_size: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
    while True:
        order = torch.randperm(n, generator=generator)
        yield from (order[i:i + batch_size] for i in range(0, n - batch_size + 1, batch_size))


def update_budget(p: UpdateParams, weights: torch.Tensor, fresh: torch.Tensor) -> int:
    """Iterations for `p.epochs` passes over the new samples at the share of each batch they get, bounded."""
    share = float(weights[fresh].sum())
    if share == 0:
        return p.max_iters
    wanted = math.ceil(round(p.epochs * int(fresh.sum()) / (p.batch_size * share), 3))  # rounding: float32 sums
    return min(max(wanted, p.min_iters, 1), p.max_iters)


@dataclass(frozen=True)
class UpdatePlan:
    held: torch.Tensor  # mask of the validation slice, held out of training
    weights: torch.Tensor  # draw probabilities of the remaining samples
    budget: int  # iterations


def plan_update(p: UpdateParams, entries: list[tuple[str, str]], fresh: torch.Tensor, class_names: list[str],
                seed: int) -> UpdatePlan:
    """The update session's data plan, from the file list alone (no image decoded yet)."""
    position = {name: i for i, name in enumerate(class_names)}
    targets = torch.tensor([position[c] for _, c in entries], dtype=torch.long)
    held = validation_split(targets, fresh, p.val_per_class, seed)
    weights = sampling_weights(targets[~held], fresh[~held], p.new_share)
    return UpdatePlan(held, weights, update_budget(p, weights, fresh[~held]))


def choose_path(params: Params, train_images: int, plan: UpdatePlan) -> dict:
    """`update.method: auto`: the cheaper of an sgm update and the standard retrain, estimated in samples through
    the trainable layers (both paths train the same layers; LoRA's extra FLOPs per step are in the benchmark)."""
    retrain_iters = math.ceil(params.train.epochs * train_images / params.train.batch_size)
    estimate = {"sgm": plan.budget * params.update.batch_size, "joint": retrain_iters * params.train.batch_size}
    chosen = "sgm" if estimate["sgm"] <= estimate["joint"] else "joint"
    log.info("path: %s (estimated samples: sgm update %d, standard retrain %d)", chosen, estimate["sgm"],
             estimate["joint"])
    return {"chosen": chosen, "estimated_samples": estimate,
            "reason": f"{'update' if chosen == 'sgm' else 'standard retrain'} is cheaper: "
                      f"{estimate[chosen]} vs {estimate['joint' if chosen == 'sgm' else 'sgm']} samples"}


# ---- schedule and stop ---------------------------------------------------------------------------------

class Schedule:
    """Linear warm-up, constant learning rate, then a linear cooldown to zero. The cooldown takes the last
    `cooldown_share` of the budget, or starts when the stop rule decides (lasting that share of the iterations
    done by then): however a session ends, its last steps run at a learning rate near zero."""

    def __init__(self, optimizer: torch.optim.Optimizer, budget: int, warmup_share: float, cooldown_share: float):
        self.optimizer, self.cooldown_share = optimizer, cooldown_share
        self.base = [group["lr"] for group in optimizer.param_groups]
        self.warmup = max(1, round(warmup_share * budget))
        self.cooldown = max(1, round(cooldown_share * budget))
        self.end = budget
        self.stopped = False

    def stop(self, iteration: int) -> None:
        self.cooldown = max(1, round(self.cooldown_share * iteration))
        self.end, self.stopped = min(self.end, iteration + self.cooldown), True

    def factor(self, iteration: int) -> float:
        """Multiplier of the base learning rate for step `iteration` + 1."""
        return max(0.0, min(1.0, (iteration + 1) / self.warmup, (self.end - iteration) / self.cooldown))

    def set(self, iteration: int) -> None:
        for group, base in zip(self.optimizer.param_groups, self.base, strict=True):
            group["lr"] = base * self.factor(iteration)


class GapAwareStop:
    """Decides on the validation slice (held out of the training data, never test images) when a session has
    learnt what it can: neither the new data (new classes, or all classes in a data-growth session) nor the old
    classes gained `stop_min_gain` points over their best for `stop_patience` evaluations. Iteration 0 (the
    parent) is no best: recovering from the dip counts as gain, and a data-growth session need not beat its
    parent within a few evaluations to go on."""

    def __init__(self, params: UpdateParams):
        self.params = params
        self.best_new, self.best_old, self.stale = -math.inf, -math.inf, 0

    def __call__(self, row: dict) -> str | None:
        p = self.params
        if row["iteration"] == 0:
            return None
        new = row["all_acc"] if row["new_acc"] is None else row["new_acc"]
        old = -math.inf if row["old_acc"] is None else row["old_acc"]  # None: no old samples (no rehearsal)
        gained = new >= self.best_new + p.stop_min_gain or old >= self.best_old + p.stop_min_gain
        self.best_new, self.best_old = max(self.best_new, new), max(self.best_old, old)
        if row["iteration"] < p.min_iters:
            return None
        self.stale = 0 if gained else self.stale + 1
        if self.stale < p.stop_patience:
            return None
        return (f"plateau at iteration {row['iteration']}: no class group gained {p.stop_min_gain} points on the "
                f"validation slice in {p.stop_patience} evaluations")


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
               schedule: Schedule, evaluator: ContinualEvaluator, engine: Engine, precision: str,
               validation: ContinualEvaluator | None = None, stop: GapAwareStop | None = None) -> dict:
    """Steps until the schedule ends, on the engine's device at `precision` (fp32 | bf16 autocast); continual
    evaluation on the test subset (measurement only) and, when a stop rule is given, on the validation slice
    (the decision)."""
    optimizer = session.optimizer
    session.model.train()
    model, rank, world = distributed.wrap(session.model), distributed.rank(), distributed.world()
    main = rank == 0
    # this rank's slice of every global batch, served by the pool: from memory, a streaming loader or the cache
    steps = pool.batches((index[rank::world] for index in batches), engine.device, engine.workers)
    train_s, iteration, reason, lr_at_end = 0.0, 0, f"budget ({schedule.end} iterations)", 0.0

    averaged = session.average.applied if session.average else contextlib.nullcontext

    def evaluate() -> str | None:
        with averaged():  # the model the session would ship now
            row = evaluator(session.model, iteration, train_s)
        log.info("iter %4d  loss %.3f  old %s  new %s  all %s", iteration, loss.item() if iteration else math.nan,
                 row["old_acc"], row["new_acc"], row["all_acc"])
        if stop is None or schedule.stopped or not iteration or iteration % evaluator.params.every:
            return None  # decisions at the regular cadence only; the dense early points measure the dip
        with averaged():
            return stop(validation(session.model, iteration, train_s))

    loss = torch.tensor(math.nan)
    if main:
        evaluate()
    progress = Progress("training", schedule.end, "steps", log_lines=False)  # evaluations log the milestones
    while iteration < schedule.end:
        start = time.perf_counter()
        schedule.set(iteration)
        lr_at_end = optimizer.param_groups[0]["lr"]
        images, targets = next(steps)
        with autocast(engine.device, precision):
            loss = session.loss(model(classifier.normalize(images)), targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        session.after_step()
        iteration += 1
        train_s += time.perf_counter() - start
        progress.advance(total=schedule.end)
        crash_point(f"train:step{iteration}")
        if not torch.isfinite(loss):
            raise FloatingPointError(f"loss became {loss.item()} at iteration {iteration}; lower the learning rate")
        if evaluator.due(iteration) or iteration == schedule.end:
            why = evaluate() if main else None
            if distributed.decided_on_rank0(why is not None):
                schedule.stop(iteration)
                reason = f"{why or 'stopped by rank 0'}; then {schedule.end - iteration} iterations of cooldown"
    progress.close()
    steps.close()  # ends a streaming loader's workers
    return {"iterations": iteration, "train_s": round(train_s, 2), "stop_reason": reason,
            "lr_peak": schedule.base, "lr_at_end": lr_at_end}


# ---- data ----------------------------------------------------------------------------------------------

def scan_version(data_root: Path, manifest: Manifest | None = None) -> Manifest:
    manifest = manifest or build_manifest(data_root)
    if problems := manifest.problems():
        raise DataError(f"refusing to train on {data_root}:\n  - " + "\n  - ".join(problems))
    return manifest


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


def validation_split(targets: torch.Tensor, fresh: torch.Tensor, per_class: int,
                     seed: int) -> torch.Tensor:
    """A mask of up to `per_class` samples per class (at most VAL_MAX_SHARE of it) held out of training for the
    stop decision; in a class that got new files, drawn from those (what the session must learn)."""
    generator = torch.Generator().manual_seed(seed + 1)
    held = torch.zeros(len(targets), dtype=torch.bool)
    for label in targets.unique():
        members = targets == label
        if (members & fresh).any():
            members &= fresh
        index = torch.nonzero(members).flatten()
        take = min(per_class, int(len(index) * VAL_MAX_SHARE))
        held[index[torch.randperm(len(index), generator=generator)[:take]]] = True
    return held


def peak_rss_mb() -> float:
    """This process's peak resident memory. Linux's VmHWM: getrusage's ru_maxrss keeps the high-water mark of
    the process a child was forked from, across exec."""
    try:
        status = Path("/proc/self/status").read_text()
        return round(int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:"))) / 1024,
                     1)
    except (OSError, StopIteration):
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
          data_version: str | None = None, manifest: Manifest | None = None, engine: Engine | None = None) -> dict:
    """The standard recipe from the pretrained start on all data: the base model (no parent), or `joint`, the
    standard retrain beside an update. Same session as `update`."""
    return update(parent_dir, data_root, out, params, "joint", data_version, manifest, engine)


def update(parent_dir: Path | None, data_root: Path, out: Path, params: Params, method: str | None = None,
           data_version: str | None = None, manifest: Manifest | None = None, engine: Engine | None = None) -> dict:
    """One session, top to bottom: the parent model and what arrived since its data version -> the session's
    data (rehearsal pool and validation slice, or all data for a retrain) -> the method -> the loop with
    continual evaluation -> the final evaluation on the full test split -> the candidate directory.

    `data_version` (DVC's md5 of the folder, when tracked) goes into the card for the next run to compare;
    `manifest`: the folder's manifest when the caller built it already (hashing every file is not free);
    `engine`: device, frozen-trunk feature cache (same results, the trunk computed once per image), memory budget
    (default: the CPU, no cache)."""
    method, engine = method or params.update.method, engine or Engine()
    wall = time.perf_counter()
    check_free(out)  # before training, not after
    check_backbone(params.model.backbone)
    torch.manual_seed(params.seed)
    manifest = scan_version(data_root, manifest)
    parent, parent_card, diff, plan, choice = None, None, None, None, None
    if parent_dir is not None:
        parent, parent_card = load_model(parent_dir, engine.device)
        parent_manifest, diff = _diff(Path(parent_dir), manifest, data_root)
    old_classes = parent_card["class_names"] if parent_card else manifest.classes()
    class_names = old_classes + (diff.new_classes if diff else [])
    if parent is None:
        method = "joint"  # nothing to update: the standard recipe
    elif method == AUTO or not get_method(method).retrain:
        entries, fresh = rehearsal_pool(manifest, parent_manifest, class_names, params.update.rehearsal_per_class,
                                        params.seed)
        plan = plan_update(params.update, entries, fresh, class_names, params.seed)
        if method == AUTO:
            choice = choose_path(params, len(manifest.entries("train")), plan)
            method = choice["chosen"]
    recipe = get_method(method)
    n_old, p = len(old_classes), params.train if recipe.retrain else params.update
    precision = resolve_precision(p.precision, engine.device)
    if recipe.retrain:
        model = build_classifier(params.model, len(class_names)).to(engine.device)
        train_entries, held_entries = manifest.entries("train"), []
    else:
        model = parent  # trained in place; its predictions are taken before the first step
        held = plan.held.tolist()  # the validation slice, loaded on its own
        train_entries = [e for e, h in zip(entries, held, strict=True) if not h]
        held_entries = [e for e, h in zip(entries, held, strict=True) if h]
    log.info("loading %d training images and the test split of %s (%d classes); computing on %s at %s",
             len(train_entries) + len(held_entries), data_root, len(class_names), describe(engine.device), precision)
    inputs = open_inputs(model, params, engine, data_root, manifest, class_names, train_entries, held_entries)
    pool, test = inputs.pool, inputs.test
    evaluator = ContinualEvaluator(test, n_old, params.eval, params.seed)
    test_digests = [manifest.files["test"][path][1] for path, _ in manifest.entries("test")]  # the rows of `test`
    before = _parent_baseline(parent, parent_card, model, inputs, params, engine, data_root, manifest, evaluator,
                              n_old, test_digests)
    generator = torch.Generator().manual_seed(params.seed)
    validation = stop = None
    if recipe.retrain:
        session = recipe.prepare(model, n_old, 0, pool, inputs.held, params)
        budget = math.ceil(p.epochs * len(pool) / p.batch_size)
        batches = epoch_batches(len(pool), p.batch_size, generator)
    else:
        grow_head(model, len(diff.new_classes))
        if p.stop_patience and len(inputs.held):  # the optional stop rule
            validation = ContinualEvaluator(inputs.held, n_old, params.eval.model_copy(
                update={"per_class": len(inputs.held)}), params.seed)
            stop = GapAwareStop(p)
        # old head rows stay fixed when new output units arrive; in a data-growth session the head learns
        session = recipe.prepare(model, n_old, n_old if diff.new_classes else 0, pool, inputs.held, params)
        budget = plan.budget
        batches = weighted_batches(plan.weights, p.batch_size, generator)
    schedule = Schedule(session.optimizer, budget, p.warmup_share, p.cooldown_share)
    flops = step_flops(session, model, pool.images[:p.batch_size])
    log.info("%s: %d old + %d new classes, %d training images, budget %d iterations", method, n_old,
             len(class_names) - n_old, len(pool), budget)
    loop = train_loop(session, model, pool, batches, schedule, evaluator, engine, precision, validation, stop)
    if distributed.rank() != 0:  # rank 0 evaluates and writes the one checkpoint
        return loop
    final_model = session.finish()

    final_logits = logits_of(final_model, test)
    preds = top_class(final_logits)
    kind = diff.kind if diff else "first version"
    metrics = {"method": method if parent else "train", "kind": kind, "path_choice": choice,
               "new_classes": diff.new_classes if diff else [], "new_samples": diff.new_samples if diff else {},
               **loop, **accuracy_report_final(preds, test, old_classes), **session.info,
               "samples_seen": loop["iterations"] * p.batch_size, "flops_per_step": flops,
               # the steps, and the forward passes of the method's own embeddings (a third of a step per sample)
               "train_flops": flops * loop["iterations"] + flops // (3 * p.batch_size) * session.info.get(
                   "samples_embedded", 0), "feature_cache": inputs.trunk is not None,
               "streamed": pool.streamed, "device": engine.device.type, "precision": precision,
               **_head_norms(final_model, n_old)}
    if parent is not None:
        metrics.update(old_acc_before=before["old_acc_before"],
                       negative_flip_rate=_flips(before["parent_preds"], preds, test, n_old))
        if not recipe.retrain:
            metrics.update(new_acc_at_start=evaluator.rows[0]["new_acc"],
                           **gap_metrics(evaluator.rows, before["old_acc_before_eval"]))
    inputs.release(final_model)
    metrics.update(_costs(wall, evaluator, validation))
    _write(out, final_model, _card(params, class_names, old_classes, metrics["method"], manifest,
                                   _parent_ref(parent_dir, parent_card), data_version), metrics, evaluator, manifest)
    if engine.predictions:  # the gate, and the next version's update, read them instead of predicting again
        engine.predictions.put(load_card(out)["weights_sha256"], test_digests, final_logits)
    return metrics


def _diff(parent_dir: Path, manifest: Manifest, data_root: Path) -> tuple[Manifest, DataDiff]:
    """The parent's manifest (read once) and what changed since; refused changes raise."""
    path = parent_dir / MANIFEST
    if not path.is_file():
        raise DataError(f"{path} is missing: the parent records no data version to diff against")
    parent_manifest = Manifest.from_json(path.read_text())
    diff = diff_manifests(parent_manifest, manifest)
    log.info("data diff: %s", diff.summary())
    diff.raise_if_refused()
    if diff.kind == "unchanged":
        raise DataError(f"{data_root} holds no new training data since {parent_dir}; nothing to update")
    return parent_manifest, diff


def _parent_baseline(parent: Classifier | None, parent_card: dict | None, model: Classifier, inputs: Inputs,
                     params: Params, engine: Engine, data_root: Path, manifest: Manifest,
                     evaluator: ContinualEvaluator, n_old: int, test_digests: list[str]) -> dict:
    """The parent's predictions on the old classes' test images (for flips and old_acc_before), before any step."""
    if parent is None:
        return {}
    test, eval_test = inputs.test, evaluator.subset
    if parent is not model:  # beside a retrain: the test split as the parent takes it (the same stratified subset)
        test = inputs.for_model(parent, params, engine, data_root, manifest)
        if test is not inputs.test:
            eval_test = test.stratified(params.eval.per_class, params.seed)
    old_test, eval_old = test.subset(test.targets < n_old), eval_test.subset(eval_test.targets < n_old)
    old_digests = [digest for digest, old in zip(test_digests, (test.targets < n_old).tolist(), strict=True) if old]
    parent_preds = predict_cached(parent, old_test, parent_card["weights_sha256"], old_digests, engine.predictions)
    old_names = test.class_names[:n_old]
    return {"parent_preds": parent_preds,
            "old_acc_before": accuracy_report(parent_preds, old_test.targets, old_names, n_old)["old_acc"],
            "old_acc_before_eval": accuracy_report(predict(parent, eval_old), eval_old.targets, old_names,
                                                   n_old)["old_acc"]}


def _head_norms(model: Classifier, n_old: int) -> dict:
    norms = model.head.weight.detach().norm(dim=1)
    return {"head_row_norm_old": round(norms[:n_old].mean().item(), 4),
            "head_row_norm_new": round(norms[n_old:].mean().item(), 4) if len(norms) > n_old else None}


def accuracy_report_final(preds: torch.Tensor, test: ImageSet, old_classes: list[str]) -> dict:
    report = accuracy_report(preds, test.targets, test.class_names, len(old_classes))
    return {"final_old_acc": report["old_acc"], "final_new_acc": report["new_acc"],
            "final_all_acc": report["all_acc"], "per_class_acc": report["per_class_acc"]}


def _flips(parent_preds: torch.Tensor, preds: torch.Tensor, test: ImageSet, n_old: int) -> float:
    old = test.targets < n_old
    return negative_flip_rate(parent_preds, preds[old], test.targets[old], n_old)


def _costs(wall_start: float, evaluator: ContinualEvaluator, validation: ContinualEvaluator | None) -> dict:
    wall_s = time.perf_counter() - wall_start
    eval_s = evaluator.seconds + (validation.seconds if validation else 0.0)
    return {"wall_s": round(wall_s, 2), "eval_s": round(eval_s, 2), "eval_overhead": round(eval_s / wall_s, 4),
            "peak_rss_mb": peak_rss_mb()}


def _parent_ref(parent_dir: Path | None, card: dict | None) -> dict | None:
    if card is None:
        return None
    return {"path": str(parent_dir), "weights_sha256": card["weights_sha256"],
            "data_version": card.get("data_version")}
