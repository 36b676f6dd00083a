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
import dataclasses
import functools
import hashlib
import json
import logging
import os
import shutil
import statistics
import subprocess
import time
from pathlib import Path

import torch

from pipeline.config import Params, Settings, load_params
from pipeline.data.fashion_mnist import materialize
from pipeline.data.imagefolder import scan_imagefolder
from pipeline.device import describe, resolve_device
from pipeline.evaluate import gap_metrics
from pipeline.gate import judge
from pipeline.model.feature_cache import FeatureCache
from pipeline.report import read_curve
from pipeline.runtime import Runtime, runtime
from pipeline.train import run_session

# name -> params overrides (beside the default, each changes one thing)
CONFIGS = {
    "default": [],  # sgm without LoRA, with the weight average (ema 0.95), since the quick-scale ablation
    "previous default (lora, no ema)": ["sgm.lora=true", "sgm.ema_decay=null"],
    "no ema": ["sgm.ema_decay=null"],
    "ema 0.98": ["sgm.ema_decay=0.98"],
    "lora": ["sgm.lora=true"],
    "passes=2": ["update.new_data_passes=2"],
    "passes=1": ["update.new_data_passes=1"],
    "lr 5e-4": ["update.lr=5e-4"],
    "lr 5e-4 + head 5e-4": ["update.lr=5e-4", "sgm.head_lr=5e-4"],
    "no soft targets": ["sgm.soft_targets=false"],
    "no frozen rows": ["sgm.freeze_old_rows=false"],
    "passes=8": ["update.new_data_passes=8"],
    "max_iters 3000": ["update.max_iters=3000"],  # the budget rule uncapped at full scale (it asks 3000 there)
    "cooldown 0.9": ["update.cooldown_share=0.9"],  # the retrain's schedule: warm-up, then linear decay to zero
}
ISO_EPOCHS = (1, 2)  # retrain budgets (train.epochs) run beside the default one for the iso-accuracy cost
GATE_EVIDENCE = ["old_acc_drop", "old_acc_drop_bound", "old_acc_drop_all", "old_acc_drop_all_bound"]
COLUMNS = ["final_all_acc", "final_old_acc", "final_new_acc", "stability_gap", "gap_S", "iterations", "wall_s",
           "train_flops"]


# what a result depends on
ENGINE = ("config.py", "gate.py", "runtime.py", "data", "evaluate", "methods", "model", "train")


@functools.cache
def engine_code() -> str:
    """The engine's code hash when this benchmark started: every run it makes or reuses is stamped with it."""
    return code_hash()


def code_hash(root: Path = Path(".")) -> str:
    """SHA-256 over the engine's source (not the registry, CLI or reports) of the checkout at `root`: a reused run
    must come from the same code."""
    digest = hashlib.sha256()
    paths = [root / "pipeline" / part for part in ENGINE]
    for path in sorted(f for p in paths for f in ([p] if p.is_file() else p.glob("**/*.py"))):
        digest.update(path.relative_to(root).as_posix().encode() + path.read_bytes())
    return digest.hexdigest()[:16]


def git_commit() -> str:
    """The checkout's commit, "-dirty" when a tracked file outside benchmarks/results has uncommitted changes (a
    benchmark running beside another rewrites the results files, not the code). PIPELINE_COMMIT, when set, names it
    instead: a copy of the tree on another host (benchmarks/gpu.sh) may carry a stale or no git directory."""
    if os.environ.get("PIPELINE_COMMIT"):
        return os.environ["PIPELINE_COMMIT"]
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
        changed = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
                                  ":!benchmarks/results"], capture_output=True, text=True).stdout.strip()
    except FileNotFoundError:
        head = None
    if not (head and head.returncode == 0 and head.stdout.strip()):
        return "unknown"
    return head.stdout.strip() + ("-dirty" if changed else "")


def benchmark_runtime(features: Path) -> Runtime:
    """The runtime the settings describe ($PIPELINE_DEVICE: auto takes a GPU when there is one), with the benchmark's
    own feature cache."""
    return dataclasses.replace(runtime(Settings()), features=FeatureCache(features, max_mb=16384))


@functools.cache
def machine() -> str:
    """Where the runs are made (the device `benchmark_runtime` computes on), in provenance and in every run's stamp:
    machines differ in float arithmetic (no run reproduces bit for bit on another)."""
    return describe(resolve_device(Settings().device))


def provenance(args, params: Params, cache_cold: bool) -> dict:
    return {"commit": git_commit(), "code_hash": engine_code(), "params_hash": params.digest(), "seeds": args.seeds,
            "device": machine(), "cores": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "feature_cache_cold_at_start": cache_cold, "args": {k: str(v) for k, v in vars(args).items()}}


def source_tag(args) -> str:
    """'' for Fashion-MNIST; for `--imagefolder`, its name and a hash of its listing (paths and sizes), which
    prefixes its versions and runs: a changed tree is materialized and trained anew, never reused."""
    if not args.imagefolder:
        return ""
    entries = scan_imagefolder(args.imagefolder)
    listing = [(rel, (args.imagefolder / rel).stat().st_size) for split in entries.values() for rel, _ in split]
    return f"{args.imagefolder.name}-{hashlib.sha256(json.dumps(listing).encode()).hexdigest()[:8]}-"


def materialize_streams(root: Path, args, source: str = "") -> dict[str, list[Path]]:
    """Each stream's versions as ImageFolder trees under `root`, from Fashion-MNIST or from `--imagefolder`."""
    if args.imagefolder:
        classes = sorted({name for _, name in scan_imagefolder(args.imagefolder)["train"]})
        write = functools.partial(copy_imagefolder, args.imagefolder)
    else:
        classes, write = list(range(10)), functools.partial(materialize, Settings().fashion_mnist_dir)
    step = max(1, round(len(classes) / 5))  # ten classes: 6, +2, +2
    if len(classes) < 3 and "class-incremental" in args.streams:
        raise SystemExit(f"{args.imagefolder}: {len(classes)} class(es); a class-incremental stream needs 3 or more")
    plan = {"class-incremental": [(classes[:-2 * step], args.per_class), (classes[-2 * step:-step], args.per_class),
                                  (classes[-step:], args.per_class)],
            "data-growth": [(classes, args.growth_from), (classes, args.growth_to)]}
    if unknown := set(args.streams) - set(plan):
        raise SystemExit(f"--streams {','.join(sorted(unknown))}: not a stream; give {' and/or '.join(plan)}")
    plan = {stream: steps for stream, steps in plan.items() if stream in args.streams}
    streams = {}
    for stream, steps in plan.items():
        paths, previous = [], None
        sizes = "-".join(str(n) for _, n in steps) + f"-test{args.test_per_class}"
        for number, (step_classes, per_class) in enumerate(steps, start=1):
            path = root / f"{source}{stream}-{sizes}" / f"v{number}"
            if not path.exists():
                scratch = path.with_name(f".{path.name}")
                shutil.rmtree(scratch, ignore_errors=True)
                if previous:
                    shutil.copytree(previous, scratch)
                write(scratch, step_classes, per_class, args.test_per_class)
                scratch.rename(path)
            paths.append(path)
            previous = path
        streams[stream] = paths
    return streams


@functools.cache
def leak_free(source: Path) -> dict[str, list[tuple[str, str]]]:
    """The tree's entries, scanned and hashed once per run, less the test images byte-identical to a training image
    (leakage), as Fashion-MNIST's are left out."""
    entries = scan_imagefolder(source)
    train = {hashlib.sha256((source / rel).read_bytes()).digest() for rel, _ in entries["train"]}
    return {"train": entries["train"],
            "test": [(rel, name) for rel, name in entries["test"]
                     if hashlib.sha256((source / rel).read_bytes()).digest() not in train]}


def copy_imagefolder(source: Path, out: Path, classes: list[str], train_per_class: int,
                     test_per_class: int) -> None:
    """Copy the first N images (by name) of each class and split into `out/{train,test}/<class>/`."""
    for split, limit in [("train", train_per_class), ("test", test_per_class)]:
        for name in classes:
            for rel in [rel for rel, label in leak_free(source)[split] if label == name][:limit]:
                (out / rel).parent.mkdir(parents=True, exist_ok=True)
                if not (out / rel).exists():
                    shutil.copyfile(source / rel, out / rel)


def reuse_or_run(out: Path, params: Params, run, *args, reads: tuple[str, ...] = ()) -> dict:
    """A finished run with the same params and engine code, made on this machine, is read back (resume); anything
    else is redone. The same code includes an earlier engine that `equivalence.json` proves gives the same models
    bit for bit (its runs count when their params hash is today's: a key renamed, added or removed since makes
    them other runs). `reads`: the params sections the run's model depends on (a retrain: RETRAIN_READS); then a
    run whose card has the same values there is the same run, whatever the rest of its params said (its metrics
    measured against its parent, `old_acc_before` and `negative_flip_rate`, are those of the parent it had)."""
    stamp = out.with_name(out.name + ".provenance.json")
    expected = {"params_hash": params.digest(), "code_hash": engine_code(), "machine": machine()}
    if (out / "metrics.json").exists() and stamp.exists():
        found, codes = json.loads(stamp.read_text()), (expected["code_hash"], *proven_equal(expected["code_hash"]))
        same_params = found["params_hash"] == expected["params_hash"]
        if reads and (out / "card.json").exists():
            stored, current = json.loads((out / "card.json").read_text())["params"], params.model_dump()
            same_params = same_params or all(stored.get(key) == current[key] for key in reads)
        if found["machine"] == expected["machine"] and found["code_hash"] in codes and same_params:
            return json.loads((out / "metrics.json").read_text())
    shutil.rmtree(out, ignore_errors=True)
    metrics = run(*args)
    stamp.write_text(json.dumps(expected))
    return metrics


RETRAIN_READS = ("seed", "model", "train", "eval")  # what a retrain's model and curve depend on


@functools.cache
def proven_equal(code: str) -> tuple[str, ...]:
    """Earlier engine code hashes whose models `benchmarks/results/equivalence.json` shows identical to `code`'s."""
    record = Path("benchmarks/results/equivalence.json")
    if not record.exists():
        return ()
    proof = json.loads(record.read_text())
    same = proof["identical"] and proof["provenance"]["after"]["code_hash"] == code
    return (proof["provenance"]["before"]["code_hash"],) if same else ()


def run_stream(stream: str, versions: list[Path], seed: int, work: Path, cache: Runtime, args) -> dict:
    out = work / stream / f"seed{seed}"
    base_params = load_params(Path("params.yaml"), [*args.set, f"seed={seed}"])
    base = reuse_or_run(out / "v1-base", base_params, run_session, None, versions[0], out / "v1-base", base_params,
                        "retrain", None, None, cache)
    rows: dict = {"v1": {"base": base}}
    parents = {name: out / "v1-base" for name in [*args.configs, "vanilla"]}
    for number, data in enumerate(versions[1:], start=2):
        version, row, parents_before = f"v{number}", {}, dict(parents)
        retrain_dir = out / f"{version}-retrain"
        retrain_parent = parents[args.configs[0]]  # the default's model before this version (the diff's base)
        row["retrain"] = reuse_or_run(retrain_dir, base_params, run_session, retrain_parent, data, retrain_dir,
                                      base_params, "retrain", None, None, cache)
        configs = args.configs if seed < args.full_seeds else args.configs[:1]  # ablation rows: fewer seeds
        for name in configs:
            params = load_params(Path("params.yaml"), [*args.set, *CONFIGS[name], f"seed={seed}"])
            run_dir = out / f"{version}-{_slug(name)}"
            row[name] = reuse_or_run(run_dir, params, run_session, parents[name], data, run_dir, params, "sgm", None,
                                     None, cache)
            parents[name] = run_dir
        if args.iso:  # retrains at smaller budgets, each a run of its own, for the iso-accuracy cost
            row["retrain"]["budgets"] = {str(base_params.train.epochs): _cost(row["retrain"]),
                                         **shorter_retrains(retrain_parent, data, retrain_dir, seed, args, cache)}
        iterations = row[args.configs[0]]["iterations"]
        same_budget = load_params(Path("params.yaml"), [*args.set, f"seed={seed}", f"update.max_iters={iterations}",
                                                        f"update.min_iters={iterations}"])
        vanilla_dir = out / f"{version}-vanilla"
        row["vanilla"] = reuse_or_run(vanilla_dir, same_budget, run_session, parents["vanilla"], data, vanilla_dir,
                                      same_budget, "vanilla", None, None, cache)
        parents["vanilla"] = vanilla_dir
        # what the gate sees of each candidate against its own parent (the retrain: against the default's parent)
        gate_rules = base_params.gate
        for name, run_dir, parent in [(n, out / f"{version}-{_slug(n)}", parents_before[n]) for n in configs] + [
                ("retrain", retrain_dir, retrain_parent),
                ("vanilla", vanilla_dir, parents_before["vanilla"])]:
            result = judge(run_dir, parent, data, gate_rules, Runtime(cache.device))
            row[name]["gate"] = {"decision": result["decision"], "reasons": result["reasons"],
                                 **{k: result["evidence"][k] for k in GATE_EVIDENCE}}
        # gap_S as the paper defines it: referenced to the standard retrain's old-class accuracy (eval subset)
        reference = _old_acc_eval(retrain_dir, row[args.configs[0]])
        for name in [*configs, "vanilla"]:
            run_dir = out / f"{version}-{_slug(name)}" if name != "vanilla" else vanilla_dir
            row[name]["gap_S"] = gap_metrics(read_curve(run_dir), row[name]["old_acc_before_eval"],
                                             reference)["gap_S"]
        rows[version] = row
    return rows


def shorter_retrains(parent: Path, data: Path, retrain_dir: Path, seed: int, args, cache: Runtime) -> dict:
    """Retrains at train.epochs ISO_EPOCHS, each a run of its own (`<retrain_dir>-e<epochs>`): budget -> cost."""
    budgets = {}
    for epochs in ISO_EPOCHS:
        shorter = load_params(Path("params.yaml"), [*args.set, f"seed={seed}", f"train.epochs={epochs}"])
        run_dir = retrain_dir.with_name(f"{retrain_dir.name}-e{epochs}")
        budgets[str(epochs)] = _cost(reuse_or_run(run_dir, shorter, run_session, parent, data, run_dir, shorter,
                                                  "retrain", None, None, cache))
    return budgets


def cost_ratios(sessions: list[tuple[dict, dict]]) -> dict:
    """Retrain / update over (update metrics, retrain metrics) sessions, in wall time and train FLOPs; at
    iso-accuracy over the sessions where one of the retrain's budgets reached the update."""

    def ratio(pairs: list[tuple[dict, dict]], key: str) -> float:
        return round(sum(r[key] for _, r in pairs) / sum(u[key] for u, _ in pairs), 2)

    result = {"wall_ratio": ratio(sessions, "wall_s"), "flops_ratio": ratio(sessions, "train_flops")}
    iso = [(u, iso_cost(u, r["budgets"])) for u, r in sessions if "budgets" in r]
    reached = [(u, r) for u, r in iso if r is not None]
    if reached:
        result.update(iso_wall_ratio=ratio(reached, "wall_s"), iso_flops_ratio=ratio(reached, "train_flops"))
    result["iso_reached"] = f"{len(reached)} of {len(iso)} sessions"
    return result


def _cost(metrics: dict) -> dict:
    return {k: metrics[k] for k in ("final_all_acc", "iterations", "wall_s", "train_flops")}


def iso_cost(update_metrics: dict, budgets: dict) -> dict | None:
    """The cheapest retrain budget that ends at or above the update's final all-class accuracy (None: none did)."""
    reached = [b for b in budgets.values() if b["final_all_acc"] >= update_metrics["final_all_acc"]]
    return min(reached, key=lambda b: b["wall_s"]) if reached else None


def _old_acc_eval(retrain_dir: Path, update_metrics: dict) -> float:
    """The retrain's final old-class accuracy on the continual-evaluation subset (the same images)."""
    return read_curve(retrain_dir)[-1]["old_acc"] or update_metrics["old_acc_before_eval"]


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name).strip("_")


def _stat(values: list) -> tuple[float | None, float | None]:
    values = [v for v in values if v is not None]
    if not values:
        return None, None
    return round(statistics.mean(values), 3), round(statistics.stdev(values), 3) if len(values) > 1 else 0.0


def summarize(runs: dict[str, list[dict]], methods: list[str]) -> dict:
    """stream -> version -> method -> column -> [mean, std]; plus the parent's all-class accuracy."""
    summary: dict = {}
    for stream, seeds in runs.items():
        summary[stream] = {}
        for version in [v for v in seeds[0] if v != "v1"]:
            table = {}
            for method in [*methods, "vanilla", "retrain"]:
                ran = [s[version][method] for s in seeds if method in s[version]]
                table[method] = {c: _stat([r.get(c) for r in ran]) for c in COLUMNS}
                table[method].update({c: _stat([r["gate"][c] for r in ran]) for c in GATE_EVIDENCE})
                table[method]["promoted"] = f"{sum(r['gate']['decision'] == 'promote' for r in ran)}/{len(ran)}"
                table[method]["seeds"] = len(ran)
            first = methods[0]
            n_old = [len(s[version][first]["per_class_acc"]) - len(s[version][first]["new_classes"]) for s in seeds]
            n_all = [len(s[version][first]["per_class_acc"]) for s in seeds]
            # the parent on this version's test split (equal test images per class; new classes count as wrong)
            table["parent"] = {"final_all_acc": _stat([s[version][first]["old_acc_before"] * o / a
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
                             " | ".join(_cell(c, cells.get(c)) for c in COLUMNS) + " |")
            lines += ["", "Gate evidence against the parent (points; bounds one-sided at gate.confidence; promoted: "
                      "seeds the default gate passed):", "", "| method | " + " | ".join(GATE_EVIDENCE) +
                      " | promoted |", "|" + "---|" * (len(GATE_EVIDENCE) + 2)]
            for method, cells in table.items():
                if "promoted" in cells:
                    lines.append(f"| {method} | " + " | ".join(_cell(c, cells[c]) for c in GATE_EVIDENCE) +
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


def _cell(column: str, value) -> str:
    if not value or value[0] is None:
        return "–"
    mean, std = value
    if column == "train_flops":
        return f"{mean / 1e12:.2f} T"
    return f"{mean:.4g} ± {std:.2g}" if column not in {"iterations", "wall_s"} else f"{mean:.0f} ± {std:.0f}"


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


HEADLINE = {"per_class": 500, "test_per_class": 200, "growth_from": 500, "growth_to": 600}  # `make benchmark`


def headline_run(args) -> bool:
    """Only `make benchmark`'s run (Fashion-MNIST, both streams, HEADLINE's sizes) writes parity.json's headline."""
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
