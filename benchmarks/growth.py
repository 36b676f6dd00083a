"""Growth stream: ten data versions, each configuration's update chained from version to version against the
standard retrain of every version, with provenance; the cumulative cost ratios of parity.json.

v1 = Fashion-MNIST classes 0-5 with 1/6 of their images; classes 6, 7, 8, 9 arrive at v2-v5; every class grows
linearly to all of its images at v10 (`--scale` of them). At each version: each configuration's sgm update of its
own previous model (CONFIGS of benchmarks/parity.py), and the standard retrain on all data (`train.epochs` of
params.yaml); with `--iso`, retrains at train.epochs ISO_EPOCHS as well, each a run of its own, for the cost at
iso-accuracy (run after the main comparison of every version). Every run uses one frozen-trunk feature cache.
A finished run is reused when its params hash and the engine's code hash match (the benchmark resumes across
interruptions); the results files are written after every version.

Writes growth_scale<scale>[_<name>].{md,json,png} under --out (with the frontier: accuracy against cumulative
cost for each configuration and each retrain budget) and the default configuration's cumulative ratios into
parity.json's "cumulative". `python -m benchmarks.growth --scale 0.05` is a smoke run.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import statistics
import time
from pathlib import Path

from benchmarks.harness import (
    CONFIGS,
    ISO_EPOCHS,
    benchmark_runtime,
    cell,
    cost,
    cost_ratios,
    engine_code,
    finish_figure,
    provenance,
    session,
    shorter_retrains,
    slug,
    stat,
)
from pipeline.config import Settings, load_params
from pipeline.data.fashion_mnist import materialize
from pipeline.runtime import Runtime

VERSIONS = 10
ARRIVAL = {**dict.fromkeys(range(6), 1), 6: 2, 7: 3, 8: 4, 9: 5}  # class -> version it first appears in
FULL = {"train": 6000, "test": 1000}  # images per class in Fashion-MNIST
COLUMNS = ("final_all_acc", "stability_gap", "iterations", "wall_s", "train_s", "eval_s", "train_flops")


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


def run_seed(seed: int, versions: list[Path], models: Path, cache: Runtime, args, written) -> list[dict]:
    """One seed of the stream: the main comparison version by version, then (--iso) the shorter retrains."""
    base_params = load_params(Path("params.yaml"), [*args.set, f"seed={seed}"])
    session(models / "v1-base", base_params, parent=None, data=versions[0], method="retrain", runtime=cache)
    rows, parents, retrain_parents = [], {name: models / "v1-base" for name in args.configs}, []
    for number, data in enumerate(versions[1:], start=2):
        row, retrain_parents = {"version": number}, [*retrain_parents, parents[args.configs[0]]]
        for name in args.configs:
            params = load_params(Path("params.yaml"), [*args.set, *CONFIGS[name], f"seed={seed}"])
            run_dir = models / f"v{number}-{slug(name)}"
            row[name] = session(run_dir, params, parent=parents[name], data=data, method="sgm", runtime=cache)
            parents[name] = run_dir
        retrain_dir = models / f"v{number}-retrain"
        row["retrain"] = session(retrain_dir, base_params, parent=retrain_parents[-1], data=data, method="retrain",
                                 runtime=cache)
        row["retrain"]["budgets"] = {str(base_params.train.epochs): cost(row["retrain"])}
        rows.append(row)
        written(rows)
    if args.iso:  # after the main comparison of every version
        for row, data, parent in zip(rows, versions[1:], retrain_parents, strict=True):
            row["retrain"]["budgets"].update(shorter_retrains(parent, data, models / f"v{row['version']}-retrain",
                                                              seed, args, cache))
            written(rows)
    return rows


def summarize(seeds: list[list[dict]], configs: list[str]) -> dict:
    """Per version: mean ± std over seeds of each method's columns; per configuration: the cumulative ratios."""
    versions = [row["version"] for row in seeds[0]]
    table = []
    for i, version in enumerate(versions):
        rows = [s[i] for s in seeds if len(s) > i]
        table.append({"version": version, "seeds": len(rows), **{
            method: {c: stat([r[method].get(c) for r in rows]) for c in COLUMNS}
            for method in [*configs, "retrain"]}})
    cumulative = {}
    sessions = [row for s in seeds for row in s]
    for name in configs:
        total = {k: sum(row[name][k] for row in sessions) for k in ("wall_s", "train_s", "eval_s")}
        cumulative[name] = {
            **cost_ratios([(row[name], row["retrain"]) for row in sessions]),
            # an update's fixed costs: wall time outside the training steps, and evaluation alone
            "update_fixed_share": round(1 - total["train_s"] / total["wall_s"], 3),
            "update_eval_share": round(total["eval_s"] / total["wall_s"], 3), "sessions": len(sessions),
            # the retrain budgets (train.epochs) the iso cost chose from: without --iso only the default
            "iso_budgets": sorted({epochs for row in sessions for epochs in row["retrain"]["budgets"]})}
    return {"table": table, "cumulative": cumulative, "frontier": frontier(seeds, configs)}


def frontier(seeds: list[list[dict]], configs: list[str]) -> list[dict]:
    """Accuracy against cost over the stream: each configuration's chained updates and each retrain budget
    (train.epochs; --iso adds the shorter ones). Per seed that ran the arm at every version: wall time and train
    FLOPs summed over its sessions, final all-class accuracy and the difference to the default retrain (session by
    session) averaged over them; mean ± std over those seeds; the worst session and those within 1 point over all."""
    complete = [s for s in seeds if len(s) == len(seeds[0])]  # a seed still under way is left out
    budgets = sorted({b for s in complete for row in s for b in row["retrain"]["budgets"]}, key=float)
    arms = [(name, lambda row, name=name: row[name]) for name in configs] + [
        (f"retrain, train.epochs {float(b):g}", lambda row, b=b: row["retrain"]["budgets"].get(b)) for b in budgets]
    points = []
    for label, pick in arms:
        streams = []  # per seed: its runs, and each one's difference to the retrain as reported
        for s in complete:
            runs = [pick(row) for row in s]
            if None not in runs:  # a retrain budget not yet run at every version is left out
                streams.append((runs, [round(r["final_all_acc"] - row["retrain"]["final_all_acc"], 2)
                                       for r, row in zip(runs, s, strict=True)]))
        if not streams:
            continue
        versus = [v for _, vs in streams for v in vs]
        points.append({"arm": label, "seeds": len(streams),
                       **{k: stat([sum(r[k] for r in runs) for runs, _ in streams])
                          for k in ("wall_s", "train_flops")},
                       "mean_acc": stat([statistics.mean(r["final_all_acc"] for r in runs) for runs, _ in streams]),
                       "mean_vs_retrain": stat([statistics.mean(vs) for _, vs in streams]),
                       "worst_vs_retrain": round(min(versus), 2),
                       "within_1": f"{sum(v >= -1.0 for v in versus)} of {len(versus)}"})
    return points


def markdown(summary: dict, prov: dict, configs: list[str], seconds: float) -> str:
    lines = [f"# Growth stream, scale {prov['args']['scale']}: updates vs the standard retrain "
             f"({prov['seeds_done']} of {prov['seeds']} seeds, mean ± std)", "",
             f"commit {prov['commit']}, code {prov['code_hash']}, params {prov['params_hash']}, {prov['cores']} cores, "
             f"torch {prov['torch']} with {prov['torch_threads']} threads, feature cache cold at start: "
             f"{prov['feature_cache_cold_at_start']}; arguments {prov['args']}.", "",
             "Each configuration's update is chained from its own previous model; the retrain trains on all of the "
             "version's data from the pretrained start. final_all_acc on the version's full test split; wall_s "
             "includes loading and evaluation; a version's row has the seeds that reached it.", "",
             "| version | seeds | method | " + " | ".join(COLUMNS) + " | − retrain |",
             "|" + "---|" * (len(COLUMNS) + 4)]
    for row in summary["table"]:
        retrain = row["retrain"]["final_all_acc"][0]
        for method in [*configs, "retrain"]:
            cells = row[method]
            versus = f"{cells['final_all_acc'][0] - retrain:+.2f}" if method != "retrain" else "–"
            lines.append(f"| v{row['version']} | {row['seeds']} | {method} | " +
                         " | ".join(cell(c, cells[c]) for c in COLUMNS) + f" | {versus} |")
    lines += ["", "## Cumulative over the stream (retrain / update; all sessions and seeds)", "",
              f"iso: per session, the cheapest of the retrains at train.epochs {ISO_EPOCHS} and the default that ends "
              "at or above the update's final all-class accuracy, over the sessions where one does. "
              "update_fixed_share: the update's wall time outside its training steps (loading, evaluation, init, "
              "writing); update_eval_share: continual evaluation.", "", "```",
              json.dumps(summary["cumulative"], indent=2), "```", "",
              "## Accuracy against cost (per stream: v2 to the last version; mean ± std over seeds)", "",
              "Each configuration's chained updates and each retrain budget: per seed, wall time and train FLOPs "
              "summed over the stream's sessions, final all-class accuracy and − retrain (against the default "
              "retrain, train.epochs of params.yaml, session by session) averaged over them; worst and within 1 "
              "(sessions at most 1 point below the retrain) over the sessions of every seed.", "",
              "| arm | seeds | wall s | train FLOPs | mean accuracy | mean − retrain | worst − retrain | within 1 |",
              "|---|---|---|---|---|---|---|---|",
              *[f"| {p['arm']} | {p['seeds']} | {cell('wall_s', p['wall_s'])} | "
                f"{cell('train_flops', p['train_flops'])} | {cell('final_all_acc', p['mean_acc'])} | "
                f"{p['mean_vs_retrain'][0]:+.2f} ± {p['mean_vs_retrain'][1]:.2f} | "
                f"{p['worst_vs_retrain']:+.2f} | {p['within_1']} |"
                for p in summary["frontier"]],
              "", f"Benchmark wall time: {seconds:.0f} s."]
    return "\n".join(lines) + "\n"


def plot(summary: dict, configs: list[str], png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    versions = [row["version"] for row in summary["table"]]
    fig, axes = plt.subplots(1, 3, figsize=(16, 4))
    for method in [*configs, "retrain"]:
        walls = [row[method]["wall_s"][0] for row in summary["table"]]
        axes[0].plot(versions, [sum(walls[:i + 1]) for i in range(len(walls))], "o-", label=method)
        axes[1].plot(versions, [row[method]["final_all_acc"][0] for row in summary["table"]], "o-", label=method)
    axes[0].set(title="cumulative wall time from v2", xlabel="data version", ylabel="seconds")
    axes[1].set(title="all-class test accuracy", xlabel="data version", ylabel="percent")
    retrains = [p for p in summary["frontier"] if p["arm"] not in configs]
    axes[2].errorbar([p["train_flops"][0] / 1e12 for p in retrains], [p["mean_acc"][0] for p in retrains],
                     [p["mean_acc"][1] for p in retrains], fmt="s-", color="gray", label="retrain (train.epochs)")
    for p in summary["frontier"]:
        axes[2].annotate(p["arm"].removeprefix("retrain, "), (p["train_flops"][0] / 1e12, p["mean_acc"][0]),
                         fontsize=8)
        if p["arm"] in configs:
            axes[2].errorbar(p["train_flops"][0] / 1e12, p["mean_acc"][0], p["mean_acc"][1], fmt="o", label=p["arm"])
    axes[2].set(title="accuracy against cost over the stream", xlabel="train FLOPs, v2 to the last version (T)",
                ylabel="mean all-class accuracy, percent")
    finish_figure(fig, axes, png)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scale", type=float, default=0.5, help="share of Fashion-MNIST used (1.0 = all 70,000)")
    parser.add_argument("--seeds", type=int, default=1, help="the retrains' cost makes 3 seeds hours at scale 0.5")
    parser.add_argument("--configs", default="default", help="comma-separated names of parity's CONFIGS")
    parser.add_argument("--iso", action="store_true", help=f"also retrain at train.epochs {ISO_EPOCHS} (iso-accuracy)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--name", default="", help="suffix of the results files' names (the runs are shared)")
    parser.add_argument("--set", action="append", default=[], help="params override for every run, as in the CLI")
    args = parser.parse_args()
    args.configs = args.configs.split(",")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    engine_code()  # the code every run of this benchmark is stamped with
    name = f"growth_scale{args.scale}" + (f"_{args.name}" if args.name else "")
    work = args.out / f"growth_scale{args.scale}-work"  # data, features and runs, shared by every --name
    versions = materialize_versions(work / "data", args.scale)
    cold = not (work / "features").exists()
    cache = benchmark_runtime(work / "features")
    prov = provenance(args, load_params(Path("params.yaml"), args.set), cold)
    start, seeds = time.perf_counter(), []

    def written(rows: list[dict]) -> None:
        prov["seeds_done"] = len(seeds) + 1
        write_results(args, name, prov, [*seeds, rows], time.perf_counter() - start)

    for seed in range(args.seeds):
        seeds.append(run_seed(seed, versions, work / "models" / f"seed{seed}", cache, args, written))


def write_results(args, name: str, prov: dict, seeds: list[list[dict]], seconds: float) -> None:
    summary = summarize(seeds, args.configs)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{name}.md").write_text(markdown(summary, prov, args.configs, seconds))
    (args.out / f"{name}.json").write_text(json.dumps({"provenance": prov, "summary": summary, "runs": seeds,
                                                      "seconds": seconds}, indent=2))
    plot(summary, args.configs, args.out / f"{name}.png")
    if args.configs[0] == "default":
        headline = args.out / "parity.json"
        saved = json.loads(headline.read_text()) if headline.exists() else {}
        saved["cumulative"] = {**summary["cumulative"]["default"], "stream": f"{name}.json",
                               "seeds": prov["seeds_done"], "versions": len(seeds[-1]) + 1,
                               "provenance": {key: prov[key] for key in ("commit", "code_hash", "params_hash",
                                                                         "device", "args")}}
        headline.write_text(json.dumps(saved, indent=2))


if __name__ == "__main__":
    main()
