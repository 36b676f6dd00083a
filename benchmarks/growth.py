"""Growth benchmark: ten data versions up to all 70,000 Fashion-MNIST images, sgm updates vs full retraining.

v1 = classes 0-5 with 1/6 of their images; classes 6, 7, 8, 9 arrive at v2-v5; every class grows linearly to all
of its images at v10 (about 4,300-6,500 new training images per version). At each version: the sgm update of the
previous sgm model, and the standard recipe (full retraining from the pretrained default, `train.epochs` of
params.yaml); the iso-accuracy retraining cost is read from the retrain's continual-evaluation curve (first
evaluation at or above the update's final all-class accuracy on the same subset). Every run uses the frozen-trunk
feature cache (one cache for the whole benchmark, so the rehearsal buffer's features are kept across sessions);
v1 and v2 are also run without it, for the cache's speed-up and the loop-vs-raw throughput.

Writes growth.{md,json,png} under --out. Run by hand: `python -m benchmarks.growth` (--scale 0.05: a smoke run).
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import time
from pathlib import Path

import torch

from benchmarks.stability_gap import iso_accuracy, reuse_or_run
from benchmarks.throughput import raw_rate
from pipeline.config import Params, Settings, load_params
from pipeline.data import ImageSet
from pipeline.data.fashion_mnist import CLASS_NAMES, materialize
from pipeline.model import grow_head, load_model, trainable_groups
from pipeline.model.trunk import Trunk
from pipeline.report import read_curve
from pipeline.train import Engine, FeatureCache, train, update

VERSIONS = 10
ARRIVAL = {**dict.fromkeys(range(6), 1), 6: 2, 7: 3, 8: 4, 9: 5}  # class -> version it first appears in
FULL = {"train": 6000, "test": 1000}  # images per class in Fashion-MNIST


def per_class(version: int, label: int, split: str, scale: float) -> int:
    """Images of class `label` in `version`: 1/6 of the class on arrival, growing linearly to all at v10."""
    arrival = ARRIVAL[label]
    if version < arrival:
        return 0
    full = round(FULL[split] * scale)
    start = full // 6
    return start + (full - start) * (version - arrival) // (VERSIONS - arrival)


def materialize_versions(root: Path, scale: float) -> list[Path]:
    paths, previous = [], None
    for version in range(1, VERSIONS + 1):
        path = root / f"v{version}"
        if not path.exists():
            scratch = root / f".v{version}"
            shutil.rmtree(scratch, ignore_errors=True)
            if previous:
                shutil.copytree(previous, scratch)
            for label in ARRIVAL:
                if n := per_class(version, label, "train", scale):
                    materialize(Settings().fashion_mnist_dir, scratch, [label], n, per_class(version, label, "test",
                                                                                             scale))
            scratch.rename(path)
        paths.append(path)
        previous = path
    return paths


def raw_step_throughput(model_dir: Path, params: Params, cached: bool, steps: int = 30) -> float:
    """Images/s of bare sgm training steps on synthetic in-memory tensors (no data loading, no evaluation)."""
    model, card = load_model(model_dir)
    n_old, batch = len(card["class_names"]), params.update.batch_size
    size = params.model.img_size
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (4 * batch, 3, size, size), dtype=torch.uint8, generator=generator)
    targets = torch.arange(4 * batch) % (n_old + 1)
    inputs = images
    if cached:
        trunk = Trunk.split(model, trainable_groups(model, params.model.frozen_groups), size)
        inputs = trunk.features(model, images)
        trunk.attach(model)
    grow_head(model, 1)
    pool = ImageSet(inputs, targets, [*card["class_names"], "synthetic"])
    return raw_rate(model, "sgm", n_old, params, Engine(), "fp32", pool, steps)


def _throughput(metrics: dict) -> float:
    return round(metrics["samples_seen"] / metrics["train_s"], 1)


def run(versions: list[Path], models: Path, params: Params, cache: Engine) -> dict:
    rows = []
    base = reuse_or_run(models / "v1-base", train, versions[0], models / "v1-base", params, None, None, None, cache)
    rows.append({"version": 1, "sgm": base, "retrain": base})
    parent = models / "v1-base"
    for number, data in enumerate(versions[1:], start=2):
        sgm_dir, joint_dir = models / f"v{number}-sgm", models / f"v{number}-retrain"
        sgm = reuse_or_run(sgm_dir, update, parent, data, sgm_dir, params, "sgm", None, None, cache)
        retrain = reuse_or_run(joint_dir, update, parent, data, joint_dir, params, "joint", None, None, cache)
        iso = iso_accuracy(joint_dir, read_curve(sgm_dir)[-1]["all_acc"])
        rows.append({"version": number, "sgm": sgm, "retrain": retrain, "iso": iso})
        parent = sgm_dir
    return {"rows": rows}


def without_cache(versions: list[Path], models: Path, params: Params, cached: dict) -> dict:
    """v1's base training and v2's sgm update again without the cache: speed-up, and the same model?"""
    base = reuse_or_run(models / "v1-base-nocache", train, versions[0], models / "v1-base-nocache", params)
    sgm = reuse_or_run(models / "v2-sgm-nocache", update, models / "v1-base", versions[1],
                       models / "v2-sgm-nocache", params, "sgm")
    same = all((models / f"{a}/model.safetensors").read_bytes() == (models / f"{b}/model.safetensors").read_bytes()
               for a, b in (("v1-base", "v1-base-nocache"), ("v2-sgm", "v2-sgm-nocache")))
    cached_base, cached_sgm = cached["rows"][0]["sgm"], cached["rows"][1]["sgm"]
    return {
        "same_weights": same,
        "base": {"wall_s": [base["wall_s"], cached_base["wall_s"]],
                 "loop_img_s": [_throughput(base), _throughput(cached_base)]},
        "sgm_v2": {"wall_s": [sgm["wall_s"], cached_sgm["wall_s"]],
                   "loop_img_s": [_throughput(sgm), _throughput(cached_sgm)],
                   "raw_img_s": [raw_step_throughput(models / "v2-sgm", params, cached=False),
                                 raw_step_throughput(models / "v2-sgm", params, cached=True)]},
    }


def summarize(result: dict) -> dict:
    rows = result["rows"]
    cum = {"sgm": {"iterations": 0, "train_flops": 0, "wall_s": 0.0, "train_s": 0.0},
           "retrain": {"iterations": 0, "train_flops": 0, "wall_s": 0.0, "train_s": 0.0},
           "iso": {"iterations": 0, "train_s": 0.0}}
    table = []
    for row in rows:
        for method in ("sgm", "retrain"):
            for key in cum[method]:
                cum[method][key] += row[method][key]
        iso = row.get("iso") or {"iso_iters": row["sgm"]["iterations"], "iso_train_s": row["sgm"]["train_s"]}
        reached = iso["iso_iters"] is not None
        cum["iso"]["iterations"] += iso["iso_iters"] if reached else row["retrain"]["iterations"]
        cum["iso"]["train_s"] += iso["iso_train_s"] if reached else row["retrain"]["train_s"]
        sgm, retrain = row["sgm"], row["retrain"]
        table.append({
            "version": row["version"], "sgm_all_acc": sgm["final_all_acc"], "retrain_all_acc": retrain["final_all_acc"],
            "sgm_iters": sgm["iterations"], "retrain_iters": retrain["iterations"], "iso_iters": iso["iso_iters"],
            "sgm_tflops": round(sgm["train_flops"] / 1e12, 2),
            "retrain_tflops": round(retrain["train_flops"] / 1e12, 2),
            "sgm_wall_s": sgm["wall_s"], "retrain_wall_s": retrain["wall_s"],
            "wall_ratio": round(retrain["wall_s"] / sgm["wall_s"], 2),
            "iters_ratio": round(retrain["iterations"] / sgm["iterations"], 2),
            "flops_ratio": round(retrain["train_flops"] / sgm["train_flops"], 2),
            "stability_gap": sgm.get("stability_gap"), "cum_sgm_wall_s": round(cum["sgm"]["wall_s"], 1),
            "cum_retrain_wall_s": round(cum["retrain"]["wall_s"], 1)})
    walls = [r["sgm_wall_s"] for r in table[1:]]
    return {"table": table, "cumulative": cum, "targets": {
        "update_wall_v10_over_v2": round(walls[-1] / walls[0], 3),
        "update_wall_max_over_min": round(max(walls) / min(walls), 3),
        "cum_ratio_standard": {k: round(cum["retrain"][k] / cum["sgm"][k], 2) for k in cum["sgm"]},
        "cum_ratio_iso": {k: round(cum["iso"][k] / cum["sgm"][k], 2) for k in cum["iso"]},
        "v10_all_acc_diff": round(table[-1]["sgm_all_acc"] - table[-1]["retrain_all_acc"], 2)}}


def markdown(summary: dict, cache: dict, args, seconds: float) -> str:
    cols = list(summary["table"][0])
    lines = [f"# Growth benchmark (scale {args.scale}: {VERSIONS} versions, final {round(6000 * args.scale)} train / "
             f"{round(1000 * args.scale)} test per class, torch threads {torch.get_num_threads()})", "",
             "v1's sgm and retrain columns are the same base training. Retrain = `joint`, the standard recipe from "
             "the pretrained default; both sides run with the feature cache, so the retrain's wall time is lower "
             "than a team's uncached retrain (see the cache section). iso_iters: retrain iterations to reach the "
             "update's final all-class accuracy on the evaluation subset (None: never reached).", "",
             "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(r[c]) for c in cols) + " |" for r in summary["table"]]
    lines += ["", "## Targets", "", "| measure | value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in summary["targets"].items()]
    lines += ["", "## Cumulative cost (v1 base included on both sides)", "", "| strategy | cost |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in summary["cumulative"].items()]
    lines += ["", "## Feature cache and throughput ([uncached, cached])", "", "```", json.dumps(cache, indent=2),
              "```", "", f"Benchmark wall time: {seconds:.0f} s."]
    return "\n".join(lines) + "\n"


def plot(summary: dict, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = summary["table"]
    versions = [r["version"] for r in table]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    axes[0].plot(versions, [r["sgm_wall_s"] for r in table], "o-", label="sgm update")
    axes[0].plot(versions, [r["retrain_wall_s"] for r in table], "s-", label="full retrain")
    axes[0].set(title="wall time per version", xlabel="data version", ylabel="seconds")
    axes[1].plot(versions, [r["cum_sgm_wall_s"] for r in table], "o-", label="sgm update")
    axes[1].plot(versions, [r["cum_retrain_wall_s"] for r in table], "s-", label="full retrain")
    axes[1].set(title="cumulative wall time", xlabel="data version", ylabel="seconds")
    axes[2].plot(versions, [r["sgm_all_acc"] for r in table], "o-", label="sgm update")
    axes[2].plot(versions, [r["retrain_all_acc"] for r in table], "s-", label="full retrain")
    axes[2].set(title="all-class test accuracy", xlabel="data version", ylabel="percent")
    for ax in axes:
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(png, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scale", type=float, default=1.0, help="share of Fashion-MNIST used (1.0 = all 70,000)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--set", action="append", default=[], help="params override, as in the CLI")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--resume", action="store_true", help="reuse finished runs of an interrupted benchmark")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    name = "growth" if args.scale == 1.0 else f"growth_scale{args.scale}"
    work = args.out / f"{name}-work"
    if not args.resume:
        shutil.rmtree(work / "models", ignore_errors=True)
        shutil.rmtree(work / "features", ignore_errors=True)
    versions = materialize_versions(work / "data", args.scale)
    params = load_params(Path("params.yaml"), args.set)
    cache = Engine(features=FeatureCache(work / "features", max_mb=16384))
    start = time.perf_counter()
    result = run(versions, work / "models", params, cache)
    result["cache"] = without_cache(versions, work / "models", params, result)
    summary = summarize(result)
    report = markdown(summary, result["cache"], args, time.perf_counter() - start)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{name}.md").write_text(report)
    (args.out / f"{name}.json").write_text(json.dumps({"summary": summary, **result, "classes": CLASS_NAMES,
                                                       "args": {k: str(v) for k, v in vars(args).items()}}, indent=2))
    plot(summary, args.out / f"{name}.png")
    print(report)


if __name__ == "__main__":
    main()
