"""Update quality against the standard retrain: an ablation over the update recipe, 3 seeds, with provenance.

Two Fashion-MNIST streams:
- class-incremental: v1 = classes 0-5, v2 = + 6-7, v3 = + 8-9 (`--per-class` train images per class);
- data-growth: v1 = all ten classes at `--growth-from` train images per class, v2 = `--growth-to` per class.
`--imagefolder ROOT` builds the same two streams from any ImageFolder tree (`ROOT/{train,test}/<class>/`): its
sorted classes in three steps of 60%, +20%, +20% (benchmarks/digits.py writes one of a kind the project is not
tuned on); its results never touch `parity.json`.
Both with `--test-per-class` test images per class. Per seed: the base model and the standard retrain of every
version are trained once and shared by every configuration (they do not depend on the update's params); each
configuration chains its own updates (v2 from the base, v3 from its v2); vanilla rehearsal runs with the default
configuration's iterations. A run is reused only when its params hash and the engine's code hash match.

Writes `parity_<name>.{md,json}` (every configuration, mean ± std over seeds) and, for the default configuration,
`parity.json` (the headline summary) under --out. `python -m benchmarks.parity --quick` is a smoke run.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

from benchmarks.harness import (
    COLUMNS,
    CONFIGS,
    ISO_EPOCHS,
    benchmark_runtime,
    cell,
    cost,
    cost_ratios,
    engine_code,
    materialize_streams,
    old_acc_eval,
    provenance,
    session,
    shorter_retrains,
    slug,
    source_tag,
    stat,
)
from pipeline.config import load_params
from pipeline.evaluate import gap_metrics
from pipeline.gate import judge
from pipeline.report import read_curve
from pipeline.runtime import Runtime

GATE_EVIDENCE = ["old_acc_drop", "old_acc_drop_bound", "old_acc_drop_all", "old_acc_drop_all_bound"]


def run_stream(stream: str, versions: list[Path], seed: int, work: Path, cache: Runtime, args) -> dict:
    out = work / stream / f"seed{seed}"
    base_params = load_params(Path("params.yaml"), [*args.set, f"seed={seed}"])
    base = session(out / "v1-base", base_params, parent=None, data=versions[0], method="retrain", runtime=cache)
    rows: dict = {"v1": {"base": base}}
    parents = {name: out / "v1-base" for name in [*args.configs, "vanilla"]}
    for number, data in enumerate(versions[1:], start=2):
        version, row, parents_before = f"v{number}", {}, dict(parents)
        retrain_dir = out / f"{version}-retrain"
        retrain_parent = parents[args.configs[0]]  # the default's model before this version (the diff's base)
        row["retrain"] = session(retrain_dir, base_params, parent=retrain_parent, data=data, method="retrain",
                                 runtime=cache)
        configs = args.configs if seed < args.full_seeds else args.configs[:1]  # ablation rows: fewer seeds
        for name in configs:
            params = load_params(Path("params.yaml"), [*args.set, *CONFIGS[name], f"seed={seed}"])
            run_dir = out / f"{version}-{slug(name)}"
            row[name] = session(run_dir, params, parent=parents[name], data=data, method="sgm", runtime=cache)
            parents[name] = run_dir
        if args.iso:  # retrains at smaller budgets, each a run of its own, for the iso-accuracy cost
            row["retrain"]["budgets"] = {str(base_params.train.epochs): cost(row["retrain"]),
                                         **shorter_retrains(retrain_parent, data, retrain_dir, seed, args, cache)}
        iterations = row[args.configs[0]]["iterations"]
        same_budget = load_params(Path("params.yaml"), [*args.set, f"seed={seed}", f"update.max_iters={iterations}",
                                                        f"update.min_iters={iterations}"])
        vanilla_dir = out / f"{version}-vanilla"
        row["vanilla"] = session(vanilla_dir, same_budget, parent=parents["vanilla"], data=data, method="vanilla",
                                 runtime=cache)
        parents["vanilla"] = vanilla_dir
        # what the gate sees of each candidate against its own parent (the retrain: against the default's parent)
        gate_rules = base_params.gate
        for name, run_dir, parent in [(n, out / f"{version}-{slug(n)}", parents_before[n]) for n in configs] + [
                ("retrain", retrain_dir, retrain_parent),
                ("vanilla", vanilla_dir, parents_before["vanilla"])]:
            result = judge(run_dir, parent, data, gate_rules, Runtime(cache.device))
            row[name]["gate"] = {"decision": result["decision"], "reasons": result["reasons"],
                                 **{k: result["evidence"][k] for k in GATE_EVIDENCE}}
        # gap_S as the paper defines it: referenced to the standard retrain's old-class accuracy (eval subset)
        reference = old_acc_eval(retrain_dir, row[args.configs[0]])
        for name in [*configs, "vanilla"]:
            run_dir = out / f"{version}-{slug(name)}" if name != "vanilla" else vanilla_dir
            row[name]["gap_S"] = gap_metrics(read_curve(run_dir), row[name]["old_acc_before_eval"],
                                             reference)["gap_S"]
        rows[version] = row
    return rows


def summarize(runs: dict[str, list[dict]], methods: list[str]) -> dict:
    """stream -> version -> method -> column -> [mean, std]; plus the parent's all-class accuracy."""
    summary: dict = {}
    for stream, seeds in runs.items():
        summary[stream] = {}
        for version in [v for v in seeds[0] if v != "v1"]:
            table = {}
            for method in [*methods, "vanilla", "retrain"]:
                ran = [s[version][method] for s in seeds if method in s[version]]
                table[method] = {c: stat([r.get(c) for r in ran]) for c in COLUMNS}
                table[method].update({c: stat([r["gate"][c] for r in ran]) for c in GATE_EVIDENCE})
                table[method]["promoted"] = f"{sum(r['gate']['decision'] == 'promote' for r in ran)}/{len(ran)}"
                table[method]["seeds"] = len(ran)
            first = methods[0]
            n_old = [len(s[version][first]["per_class_acc"]) - len(s[version][first]["new_classes"]) for s in seeds]
            n_all = [len(s[version][first]["per_class_acc"]) for s in seeds]
            # the parent on this version's test split (equal test images per class; new classes count as wrong)
            table["parent"] = {"final_all_acc": stat([s[version][first]["old_acc_before"] * o / a
                                                       for s, o, a in zip(seeds, n_old, n_all, strict=True)])}
            summary[stream][version] = table
    return summary


def headline(summary: dict, runs: dict, prov: dict, default: str) -> dict:
    rows = []
    for stream, versions in summary.items():
        for version, table in versions.items():
            for method, label in ((default, "sgm"), ("vanilla", "vanilla"), ("retrain", "retrain"),
                                  ("parent", "parent")):
                cells = table[method]
                rows.append({"stream": stream, "version": version, "kind": stream, "method": label,
                             "final_all_acc": cells["final_all_acc"][0], "final_all_acc_std": cells["final_all_acc"][1],
                             "stability_gap": cells.get("stability_gap", (None,))[0],
                             "wall_s": cells.get("wall_s", (None,))[0], "train_flops": cells.get("train_flops",
                                                                                               (None,))[0]})
    cumulative = {}
    for stream, seeds in runs.items():
        cumulative[stream] = cost_ratios([(s[v][default], s[v]["retrain"]) for s in seeds for v in s if v != "v1"])
    # "cumulative" of parity.json is the growth stream's (benchmarks/growth.py); these two-version streams' own
    # cost ratios stand beside it
    return {"commit": prov["commit"], "seeds": prov["seeds_done"], "provenance": prov, "rows": rows,
            "two_version_cost": cumulative}


def markdown(summary: dict, prov: dict, methods: list[str], seconds: float, cumulative: dict | None) -> str:
    device = prov.get("device") or f"CPU ({prov['cores']} cores, {prov['torch_threads']} torch threads)"
    host = "" if device.startswith("CPU") else f" on a host of {prov['cores']} cores"
    lines = [f"# Update vs standard retrain: ablation ({prov['seeds_done']} of {prov['seeds']} seeds, mean ± std)",
             "",
             f"commit {prov['commit']}, code {prov['code_hash']}, params {prov['params_hash']}, {device}{host}, "
             f"torch {prov['torch']}, feature cache cold at start: "
             f"{prov['feature_cache_cold_at_start']}; arguments {prov['args']}.", "",
             "final_* on the full test split; stability_gap and gap_S (referenced to the retrain's old-class "
             "accuracy) on the fixed continual-evaluation subset; wall_s includes loading and evaluation. "
             "vanilla: rehearsal fine-tuning with the default configuration's iterations. parent: the model before "
             "the update on this version's test split (new classes count as wrong).", ""]
    for stream, versions in summary.items():
        for version, table in versions.items():
            lines += [f"## {stream} {version}", "", "| method | seeds | " + " | ".join(COLUMNS) + " |",
                      "|" + "---|" * (len(COLUMNS) + 2)]
            for method, cells in table.items():
                lines.append(f"| {method} | {cells.get('seeds', '–')} | " +
                             " | ".join(cell(c, cells.get(c)) for c in COLUMNS) + " |")
            lines += ["", "Gate evidence against the parent (points; bounds one-sided at gate.confidence; promoted: "
                      "seeds the default gate passed):", "", "| method | " + " | ".join(GATE_EVIDENCE) +
                      " | promoted |", "|" + "---|" * (len(GATE_EVIDENCE) + 2)]
            for method, cells in table.items():
                if "promoted" in cells:
                    lines.append(f"| {method} | " + " | ".join(cell(c, cells[c]) for c in GATE_EVIDENCE) +
                                 f" | {cells['promoted']} |")
            lines.append("")
    lines += ["## Targets (default configuration)", "", "| stream | version | sgm − retrain all-class acc (≥ −1.0) | "
              "sgm − parent (data-growth: ≥ 0) | sgm gap / vanilla gap (≤ 0.33) |", "|---|---|---|---|---|"]
    for stream, versions in summary.items():
        for version, table in versions.items():
            sgm, vanilla = table[methods[0]], table["vanilla"]
            versus_parent = (f"{sgm['final_all_acc'][0] - table['parent']['final_all_acc'][0]:+.2f}"
                             if stream == "data-growth" else "–")
            ratio = (f"{sgm['stability_gap'][0] / vanilla['stability_gap'][0]:.2f}"
                     if vanilla["stability_gap"][0] else "–")
            versus_retrain = sgm["final_all_acc"][0] - table["retrain"]["final_all_acc"][0]
            lines.append(f"| {stream} | {version} | {versus_retrain:+.2f} | {versus_parent} | {ratio} |")
    lines.append("")
    if cumulative:
        lines += ["## Cost over each stream (retrain / default update, all sessions and seeds)", "",
                  "iso: the cheapest of the retrains at train.epochs " + f"{ISO_EPOCHS} and the default that ends at "
                  "or above the update's final all-class accuracy, where one does.", "", "```",
                  json.dumps(cumulative, indent=2), "```", ""]
    lines.append(f"Benchmark wall time: {seconds:.0f} s.")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small streams, 1 seed, default config: minutes")
    parser.add_argument("--seeds", type=int, default=None)
    parser.add_argument("--per-class", type=int, default=None, help="class-incremental train images per class")
    parser.add_argument("--imagefolder", type=Path, default=None,
                        help="an ImageFolder tree (<root>/{train,test}/<class>/) instead of Fashion-MNIST: the "
                             "class-incremental stream takes its sorted classes in three steps (60%%, +20%%, +20%%)")
    parser.add_argument("--streams", default="class-incremental,data-growth", help="comma-separated streams to run")
    parser.add_argument("--growth-from", type=int, default=200)
    parser.add_argument("--growth-to", type=int, default=600)
    parser.add_argument("--test-per-class", type=int, default=None)
    parser.add_argument("--configs", default=None, help="comma-separated names of CONFIGS (default: all)")
    parser.add_argument("--name", default=None, help="results file suffix")
    parser.add_argument("--iso", action="store_true", help=f"also retrain at train.epochs {ISO_EPOCHS} (iso-accuracy)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--set", action="append", default=[], help="params override for every run, as in the CLI")
    parser.add_argument("--full-seeds", type=int, default=None,
                        help="seeds that run every configuration (default: all); later seeds run the first only")
    parser.add_argument("--report", action="store_true", help="only re-render the results files from their JSON")
    args = parser.parse_args()
    args.seeds = args.seeds or (1 if args.quick else 3)
    args.full_seeds = args.seeds if args.full_seeds is None else args.full_seeds
    args.per_class = args.per_class or (300 if args.quick else 1000)
    args.test_per_class = args.test_per_class or (100 if args.quick else 300)
    args.streams = args.streams.split(",")
    args.configs = args.configs.split(",") if args.configs else (["default"] if args.quick else list(CONFIGS))
    name = args.name or ("quick" if args.quick else args.imagefolder.name if args.imagefolder else f"{args.per_class}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    engine_code()

    if args.report:  # re-render the files from the last results (e.g. after a change to this report)
        saved = json.loads((args.out / f"parity_{name}.json").read_text())
        write_results(args, name, saved["provenance"], saved["runs"], saved.get("seconds", 0.0))
        return
    work = args.out / "parity-work"
    tag = source_tag(args)
    streams = materialize_streams(work / "data", args, tag)
    cache_cold = not (work / "features").exists()
    cache = benchmark_runtime(work / "features")
    prov = provenance(args, load_params(Path("params.yaml"), args.set), cache_cold)
    start = time.perf_counter()
    runs: dict[str, list[dict]] = {stream: [] for stream in streams}
    args.out.mkdir(parents=True, exist_ok=True)
    for seed in range(args.seeds):
        for stream, versions in streams.items():
            runs[stream].append(run_stream(stream, versions, seed, work / "models" / f"{tag}{name}", cache, args))
        # written after every seed: an interrupted benchmark leaves its finished seeds (and reusable runs)
        prov["seeds_done"] = seed + 1
        write_results(args, name, prov, runs, time.perf_counter() - start)


HEADLINE = {"per_class": 500, "test_per_class": 200, "growth_from": 500, "growth_to": 600}  # `make parity`


def headline_run(args) -> bool:
    """Only `make parity`'s run (Fashion-MNIST, both streams, HEADLINE's sizes) writes parity.json's headline."""
    return (not args.quick and not args.imagefolder and set(args.streams) == {"class-incremental", "data-growth"}
            and all(getattr(args, key) == value for key, value in HEADLINE.items()))


def write_results(args, name: str, prov: dict, runs: dict, seconds: float) -> None:
    summary = summarize(runs, args.configs)
    head = headline(summary, runs, prov, "default") if args.configs[0] == "default" else None
    report = markdown(summary, prov, args.configs, seconds, head and head["two_version_cost"])
    (args.out / f"parity_{name}.md").write_text(report)
    (args.out / f"parity_{name}.json").write_text(json.dumps({"provenance": prov, "summary": summary, "runs": runs,
                                                             "seconds": seconds}, indent=2))
    if head and headline_run(args):
        path = args.out / "parity.json"
        saved = json.loads(path.read_text()) if path.exists() else {}
        saved.update(head)  # its `cumulative` (benchmarks/growth.py) and `production` blocks stay
        path.write_text(json.dumps(saved, indent=2))
    print(report)


if __name__ == "__main__":
    main()
