"""Stability-gap benchmark: sgm vs vanilla rehearsal vs full retraining on a Fashion-MNIST class stream.

v1 = classes 0-5 (base training from the pretrained default), v2 = + classes 6-7, v3 = + classes 8-9.
Writes stability_gap.{md,json,png} under --out. Run by hand: `make benchmark`, or `--quick` (`make run`).
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import statistics
import time
from pathlib import Path

from pipeline.config import Settings, load_params
from pipeline.data.fashion_mnist import materialize
from pipeline.report import plot_old_acc, read_curve
from pipeline.train import train, update

STREAM = {"v1": [0, 1, 2, 3, 4, 5], "v2": [6, 7], "v3": [8, 9]}
COLUMNS = ["stability_gap", "transient_gap", "recovery_iters", "min_old_acc", "final_old_acc", "final_new_acc",
           "final_all_acc", "iterations", "train_flops", "wall_s", "eval_overhead"]


def materialize_stream(root: Path, train_per_class: int, test_per_class: int) -> dict[str, Path]:
    versions, previous = {}, None
    for name, classes in STREAM.items():
        path = root / name
        if not path.exists():
            if previous:
                shutil.copytree(previous, path)
            materialize(Settings().fashion_mnist_dir, path, classes, train_per_class, test_per_class)
        versions[name], previous = path, path
    return versions


def iso_accuracy(joint_dir: Path, target_all_acc: float) -> dict:
    """Iterations and training seconds full retraining needs to reach `target_all_acc` (eval subset)."""
    for row in read_curve(joint_dir):
        if row["all_acc"] >= target_all_acc:
            return {"iso_iters": int(row["iteration"]), "iso_train_s": row["train_s"]}
    return {"iso_iters": None, "iso_train_s": None}


def reuse_or_run(out: Path, run, *args) -> dict:
    """A finished run (its model directory exists) is read back, so an interrupted benchmark resumes."""
    if (out / "metrics.json").exists():
        return json.loads((out / "metrics.json").read_text())
    return run(*args)


def run_seed(seed: int, versions: dict[str, Path], models: Path, overrides: list[str]) -> dict:
    params = load_params(Path("params.yaml"), [*overrides, f"seed={seed}"])
    out = models / f"seed{seed}"
    results: dict = {"v1": {"train": reuse_or_run(out / "v1-base", train, versions["v1"], out / "v1-base", params)}}
    parents = {"sgm": out / "v1-base", "vanilla": out / "v1-base"}
    for version in ("v2", "v3"):
        row, data = {}, versions[version]
        row["sgm"] = reuse_or_run(out / f"{version}-sgm", update, parents["sgm"], data, out / f"{version}-sgm",
                                  params, "sgm")
        same_budget = load_params(Path("params.yaml"), [
            *overrides, f"seed={seed}", f"update.max_iters={row['sgm']['iterations']}",
            f"update.min_iters={row['sgm']['iterations']}"])
        row["vanilla"] = reuse_or_run(out / f"{version}-vanilla", update, parents["vanilla"], data,
                                      out / f"{version}-vanilla", same_budget, "vanilla")
        row["joint"] = reuse_or_run(out / f"{version}-joint", update, parents["sgm"], data, out / f"{version}-joint",
                                    params, "joint")
        sgm_final_eval = read_curve(out / f"{version}-sgm")[-1]["all_acc"]
        row["sgm"].update(iso_accuracy(out / f"{version}-joint", sgm_final_eval))
        parents = {"sgm": out / f"{version}-sgm", "vanilla": out / f"{version}-vanilla"}
        results[version] = row
    return results


def _mean(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return round(statistics.mean(values), 3) if values else None


def summarize(runs: list[dict]) -> dict:
    summary: dict = {}
    for version in ("v2", "v3"):
        summary[version] = {}
        for method in ("sgm", "vanilla", "joint"):
            summary[version][method] = {c: _mean([r[version][method].get(c) for r in runs]) for c in COLUMNS}
        sgm, joint = summary[version]["sgm"], summary[version]["joint"]
        iso = [(r[version]["sgm"]["iso_iters"], r[version]["sgm"]["iso_train_s"], r[version]["sgm"]) for r in runs]
        summary[version]["ratios"] = {
            "standard_retrain_updates": round(joint["iterations"] / sgm["iterations"], 2),
            "standard_retrain_wall": round(joint["wall_s"] / sgm["wall_s"], 2),
            "standard_retrain_flops": round(joint["train_flops"] / sgm["train_flops"], 2),
            "iso_accuracy_updates": _mean([i / m["iterations"] if i is not None else None for i, _, m in iso]),
            "iso_accuracy_train_time": _mean([t / m["train_s"] if t is not None else None for _, t, m in iso]),
            "iso_reached_in_seeds": sum(i is not None for i, _, _ in iso),
            "sgm_gap_vs_vanilla": round(sgm["stability_gap"] / vanilla_gap, 3)
            if (vanilla_gap := summary[version]["vanilla"]["stability_gap"]) else None,
            "sgm_minus_joint_all_acc": round(sgm["final_all_acc"] - joint["final_all_acc"], 2),
        }
    return summary


def markdown(summary: dict, runs: list[dict], args) -> str:
    lines = [f"# Stability-gap benchmark ({len(runs)} seed(s), {args.train_per_class} train / "
             f"{args.test_per_class} test images per class, overrides {args.set or 'none'})", "",
             "Means over seeds. Gap metrics on the fixed continual-evaluation subset; final_* on the full test "
             "split; wall_s includes evaluation. Joint = the standard retrain from the pretrained default.", "",
             "| version | method | " + " | ".join(COLUMNS) + " |", "|" + "---|" * (len(COLUMNS) + 2)]
    for version in ("v2", "v3"):
        for method in ("sgm", "vanilla", "joint"):
            row = summary[version][method]
            cells = [f"{row[c]:.3g}" if c == "train_flops" and row[c] else str(row[c]) for c in COLUMNS]
            lines.append(f"| {version} | {method} | " + " | ".join(cells) + " |")
    lines += ["", "| version | ratio | value |", "|---|---|---|"]
    for version in ("v2", "v3"):
        lines += [f"| {version} | {k} | {v} |" for k, v in summary[version]["ratios"].items()]
    base = [r["v1"]["train"]["final_all_acc"] for r in runs]
    lines += ["", f"Base model (v1, classes 0-5) all-class accuracy: {base}."]
    return "\n".join(lines) + "\n"


def plot(models: Path, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for ax, version in zip(axes, ("v2", "v3"), strict=True):
        runs = {method: models / "seed0" / f"{version}-{method}" for method in ("sgm", "vanilla")}
        plot_old_acc(runs, png, f"{version}: old-class accuracy during the update", ax=ax)
    fig.tight_layout()
    fig.savefig(png, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small subsets, 1 seed: a few minutes")
    parser.add_argument("--seeds", type=int, default=None)
    parser.add_argument("--train-per-class", type=int, default=None)
    parser.add_argument("--test-per-class", type=int, default=None)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--set", action="append", default=[], help="params override, as in the CLI")
    parser.add_argument("--resume", action="store_true", help="reuse finished runs of an interrupted benchmark")
    args = parser.parse_args()
    args.seeds = args.seeds or (1 if args.quick else 3)
    args.train_per_class = args.train_per_class or (100 if args.quick else 1000)
    args.test_per_class = args.test_per_class or (40 if args.quick else 300)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")

    name = "stability_gap_quick" if args.quick else "stability_gap"
    work = args.out / f"{name}-work"
    if not args.resume:
        shutil.rmtree(work / "models", ignore_errors=True)
    versions = materialize_stream(work / f"data-{args.train_per_class}-{args.test_per_class}",
                                  args.train_per_class, args.test_per_class)
    start = time.perf_counter()
    runs = [run_seed(seed, versions, work / "models", args.set) for seed in range(args.seeds)]
    summary = summarize(runs)
    report = markdown(summary, runs, args) + f"\nBenchmark wall time: {time.perf_counter() - start:.0f} s.\n"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{name}.md").write_text(report)
    (args.out / f"{name}.json").write_text(json.dumps({"summary": summary, "runs": runs, "args": {
        k: str(v) for k, v in vars(args).items()}}, indent=2))
    plot(work / "models", args.out / f"{name}.png")
    print(report)
    print(f"results: {args.out}/{name}.md, .json, .png")


if __name__ == "__main__":
    main()
