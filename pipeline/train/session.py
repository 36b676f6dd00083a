"""One session, top to bottom: the parent and what arrived since its data version -> the method's plan (which
files, how drawn, for how long) -> the inputs (images, a stream, or cached trunk features) -> the parent's
predictions before any step -> the method's session -> the loop with continual evaluation -> the final evaluation
on the full test split -> the candidate directory. The same path serves every method, the retrain included."""

from __future__ import annotations

import json
import logging
import resource
import time
from datetime import UTC, datetime
from pathlib import Path

import torch

from pipeline.config import Params
from pipeline.data import DataDiff, HashCache, Manifest, build_manifest, diff_manifests
from pipeline.data.imagefolder import DataError
from pipeline.device import describe, resolve_precision
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
from pipeline.methods import METHODS, method_name
from pipeline.methods.plan import AUTO, Parent, Plan, choose, plan_retrain
from pipeline.model import Classifier, build_classifier, check_backbone, check_free, load_card, load_model, save_model
from pipeline.progress import timed
from pipeline.runtime import Runtime
from pipeline.train import distributed
from pipeline.train.inputs import Inputs, open_inputs
from pipeline.train.loop import Schedule, step_flops, train_loop

log = logging.getLogger("pipeline")
MANIFEST = "manifest.json"


def run_session(parent_dir: Path | None, data_root: Path, out: Path, params: Params, method: str | None = None,
                data_version: str | None = None, manifest: Manifest | None = None, runtime: Runtime | None = None,
                diff: DataDiff | None = None) -> dict:
    """Train a candidate into `out` and return its metrics. `parent_dir` None: the first model (the retrain's
    recipe). `method`: auto | sgm | vanilla | retrain (default: update.method). `data_version` (DVC's md5 of the
    folder) goes into the card; `manifest` and `diff`: the folder's manifest and its diff from the parent when
    the caller made them already; `runtime`: device, caches and memory budget (default: the CPU, no cache)."""
    runtime, wall, stages = runtime or Runtime(), time.perf_counter(), {}
    check_free(out)  # before training, not after
    check_backbone(params.model.backbone)
    torch.manual_seed(params.seed)
    with timed(stages, "manifest"):
        manifest = scan_version(data_root, manifest, runtime.hashes)
    with timed(stages, "parent"):
        parent = read_parent(Path(parent_dir), manifest, data_root, runtime.device, diff) if parent_dir else None
    with timed(stages, "plan"):
        plan = make_plan(params, manifest, parent, method or params.update.method)
    precision = resolve_precision(plan.hyper.precision, runtime.device)
    model = parent.model if plan.from_parent else build_classifier(params.model, len(plan.class_names)).to(
        runtime.device)
    log.info("loading %d training images and the test split of %s (%d classes); computing on %s at %s",
             len(plan.entries), data_root, len(plan.class_names), describe(runtime.device), precision)
    with timed(stages, "inputs"):
        inputs = open_inputs(model, params, runtime, data_root, manifest, plan.class_names, plan.entries)
        evaluator = ContinualEvaluator(inputs.test, plan.n_old, params.eval, params.seed)
    test_digests = [manifest.files["test"][path][1] for path, _ in manifest.entries("test")]  # rows of inputs.test
    with timed(stages, "baseline"):
        before = parent_baseline(parent, model, inputs, params, runtime, data_root, manifest, evaluator, test_digests)
    with timed(stages, "prepare"):  # the method's set-up (sgm: the new rows' init from their embeddings)
        trainer = METHODS[plan.method].prepare(model, plan, inputs.pool, params)
        schedule = Schedule(trainer.optimizer, plan.budget, plan.hyper.warmup_share, plan.hyper.cooldown_share)
        flops = step_flops(trainer, model, inputs.pool.images[:plan.hyper.batch_size])
    log.info("%s: %d old + %d new classes, %d training images, budget %d iterations", plan.method, plan.n_old,
             len(plan.class_names) - plan.n_old, len(inputs.pool), plan.budget)
    batches = plan.draw(torch.Generator().manual_seed(params.seed))
    loop_start = time.perf_counter()
    loop = train_loop(trainer, model, inputs.pool, batches, schedule, evaluator, runtime, precision)
    if distributed.rank() != 0:  # rank 0 evaluates and writes the one checkpoint
        return loop
    # the loop's wall: its steps with their batches (train), the continual evaluation (eval), its own bookkeeping
    stages.update(train=loop["train_s"], eval=evaluator.seconds,
                  loop_rest=time.perf_counter() - loop_start - loop["train_s"] - evaluator.seconds)
    with timed(stages, "final"):  # the weights shipped, and their predictions on the whole test split
        final_model = trainer.finish()
        final_logits = logits_of(final_model, inputs.test)
    metrics = record(plan, parent, loop, trainer.info, flops, final_logits, inputs, evaluator, before, precision,
                     runtime)
    inputs.release(final_model)
    metrics.update(wall_s=round(time.perf_counter() - wall, 2), peak_rss_mb=peak_rss_mb(),
                   stages_s={name: round(seconds, 2) for name, seconds in stages.items()})
    card = {"class_names": plan.class_names, "old_classes": plan.class_names[:plan.n_old],
            "model": params.model.model_dump(), "method": plan.method, "data_version": data_version,
            "manifest_digest": manifest.digest(), "params": params.model_dump(), "params_hash": params.digest(),
            "parent": parent and {"path": str(parent.path), "weights_sha256": parent.card["weights_sha256"],
                                  "data_version": parent.card.get("data_version")}}
    write_candidate(out, final_model, card, metrics, evaluator, manifest)
    if runtime.predictions:  # the gate, and the next version's update, read them instead of predicting again
        runtime.predictions.put(load_card(out)["weights_sha256"], test_digests, final_logits)
    return metrics


# ---- plan ----------------------------------------------------------------------------------------------

def scan_version(data_root: Path, manifest: Manifest | None = None, hashes: HashCache | None = None) -> Manifest:
    manifest = manifest or build_manifest(data_root, hashes)
    if problems := manifest.problems():
        raise DataError(f"refusing to train on {data_root}:\n  - " + "\n  - ".join(problems))
    return manifest


def read_parent(parent_dir: Path, manifest: Manifest, data_root: Path, device: torch.device,
                diff: DataDiff | None = None) -> Parent:
    """The parent model, its manifest and what changed since (`diff`: when the caller diffed already); a refused
    change, or no new training data, raises before anything is loaded."""
    path = parent_dir / MANIFEST
    if not path.is_file():
        raise DataError(f"{path} is missing: the parent records no data version to diff against")
    parent_manifest = Manifest.from_json(path.read_text())
    diff = diff or diff_manifests(parent_manifest, manifest)
    log.info("data diff: %s", diff.summary())
    diff.raise_if_refused()
    if diff.kind == "unchanged":
        raise DataError(f"{data_root} holds no new training data since {parent_dir}; nothing to update")
    model, card = load_model(parent_dir, device)
    return Parent(parent_dir, model, card, parent_manifest, diff)


def make_plan(params: Params, manifest: Manifest, parent: Parent | None, method: str) -> Plan:
    """The method's plan; with no parent, the retrain's (nothing to update); `auto`: the cheaper of sgm's and the
    retrain's."""
    if parent is None:
        return plan_retrain(params, manifest, None)
    if method == AUTO:
        return choose(METHODS["sgm"].plan(params, manifest, parent), plan_retrain(params, manifest, parent))
    return METHODS[method_name(method)].plan(params, manifest, parent)


# ---- record --------------------------------------------------------------------------------------------

def parent_baseline(parent: Parent | None, model: Classifier, inputs: Inputs, params: Params, runtime: Runtime,
                    data_root: Path, manifest: Manifest, evaluator: ContinualEvaluator,
                    test_digests: list[str]) -> dict:
    """The parent's predictions on the old classes' test images (for flips and old_acc_before), before any step."""
    if parent is None:
        return {}
    n_old, test, eval_test = len(parent.card["class_names"]), inputs.test, evaluator.subset
    if parent.model is not model:  # beside a retrain: the test split as the parent takes it (the same subset)
        test = inputs.for_model(parent.model, params, runtime, data_root, manifest)
        if test is not inputs.test:
            eval_test = test.stratified(params.eval.per_class, params.seed)
    old_test, eval_old = test.subset(test.targets < n_old), eval_test.subset(eval_test.targets < n_old)
    old_digests = [digest for digest, old in zip(test_digests, (test.targets < n_old).tolist(), strict=True) if old]
    parent_preds = predict_cached(parent.model, old_test, parent.card["weights_sha256"], old_digests,
                                  runtime.predictions)
    old_names = test.class_names[:n_old]
    return {"parent_preds": parent_preds,
            "old_acc_before": accuracy_report(parent_preds, old_test.targets, old_names, n_old)["old_acc"],
            "old_acc_before_eval": accuracy_report(predict(parent.model, eval_old), eval_old.targets, old_names,
                                                   n_old)["old_acc"]}


def record(plan: Plan, parent: Parent | None, loop: dict, info: dict, flops: int, final_logits: torch.Tensor,
           inputs: Inputs, evaluator: ContinualEvaluator, before: dict, precision: str, runtime: Runtime) -> dict:
    """The session's metrics: what it was, what it cost, how the final model does on the full test split, and
    against the parent (flips; for an update, the stability gap of its curve)."""
    test, n_old, p = inputs.test, plan.n_old, plan.hyper
    preds = top_class(final_logits)
    final = accuracy_report(preds, test.targets, test.class_names, n_old)
    metrics = {"method": plan.method, "kind": parent.diff.kind if parent else "first version",
               "path_choice": plan.choice, "new_classes": parent.diff.new_classes if parent else [],
               "new_samples": parent.diff.new_samples if parent else {}, **loop,
               "final_old_acc": final["old_acc"], "final_new_acc": final["new_acc"], "final_all_acc": final["all_acc"],
               "per_class_acc": final["per_class_acc"], **info, "samples_seen": loop["iterations"] * p.batch_size,
               "flops_per_step": flops,
               # the steps, and the forward passes of the method's own embeddings (a third of a step per sample)
               "train_flops": flops * loop["iterations"] + flops // (3 * p.batch_size) * info.get(
                   "samples_embedded", 0),
               "feature_cache": inputs.trunk is not None, "streamed": inputs.pool.streamed,
               "device": runtime.device.type, "precision": precision, "eval_s": round(evaluator.seconds, 2)}
    if parent is not None:
        old = test.targets < n_old
        metrics.update(old_acc_before=before["old_acc_before"], negative_flip_rate=negative_flip_rate(
            before["parent_preds"], preds[old], test.targets[old], n_old))
    if plan.from_parent:
        metrics.update(new_acc_at_start=evaluator.rows[0]["new_acc"],
                       **gap_metrics(evaluator.rows, before["old_acc_before_eval"]))
    return metrics


def write_candidate(out: Path, model: Classifier, card: dict, metrics: dict, evaluator: ContinualEvaluator,
                    manifest: Manifest) -> None:
    card = {**card, "metrics": {k: v for k, v in metrics.items() if not isinstance(v, dict)},
            "created_at": datetime.now(UTC).isoformat(timespec="seconds")}
    save_model(out, model, card, {"metrics.json": json.dumps(metrics, indent=2), "curve.csv": evaluator.csv(),
                                  MANIFEST: manifest.to_json()})
    log.info("wrote %s", out)


def peak_rss_mb() -> float:
    """This process's peak resident memory. Linux's VmHWM: getrusage's ru_maxrss keeps the high-water mark of
    the process a child was forked from, across exec."""
    try:
        status = Path("/proc/self/status").read_text()
        return round(int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:"))) / 1024,
                     1)
    except (OSError, StopIteration):
        return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
