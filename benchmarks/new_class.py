"""New classes arriving on a large base: the update's arms against the retrain, per seed, under any CPU kernels.

The production stream's fragile step is a new class (a few hundred images on a base of thousands): one seed or one
CPU family lands a point below the retrain where another is level. This screen isolates it. Per seed, a base model
is retrained on Fashion-MNIST classes 0-7 (`--base-per-class` images each); then two cases arrive, each its own
version of the base data: `one` (+ class 8) and `two` (+ classes 8 and 9 at once), `--new` images per new class.
Each case has its retrain (the reference) and the update's arms (`--arms`, names of harness.CONFIGS), every arm
updating the same base model.

The base and the references are made once, under the kernels of the first run (`--references make`); a run under
other kernels (`ATEN_CPU_CAPABILITY=avx2 ...`, `--references read`) updates the same base models and compares with
the same references, so its rows differ from the first run's by the update's kernels alone. A session is reused when
its params, engine code and machine match (harness.reuse_or_run).

Writes `new_class<--tag>.{json,md}` under --out: per (seed, case, arm) the final all/old/new-class accuracy, the
iterations, train FLOPs and the difference to the reference; per (case, arm) the worst seed and the means
(`--report` re-renders them from the JSON).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from benchmarks.harness import CONFIGS, benchmark_runtime, machine, provenance, run_stamp, session, slug, stat
from pipeline.config import Settings, load_params
from pipeline.data.fashion_mnist import materialize

BASE = list(range(8))
CASES = {"one": [8], "two": [8, 9]}
KEYS = ("final_all_acc", "final_old_acc", "final_new_acc", "iterations", "train_flops", "wall_s")


def versions(root: Path, args) -> dict[str, Path]:
    """The base version and each case's version, as ImageFolder trees (made once)."""
    tag = f"base{args.base_per_class}-new{args.new}-test{args.test_per_class}"
    source, paths = Settings().fashion_mnist_dir, {}
    for name, added in {"base": [], **CASES}.items():
        path = root / tag / name
        if not path.exists():
            scratch = path.with_name(f".{name}")
            materialize(source, scratch, BASE, args.base_per_class, args.test_per_class)
            if added:
                materialize(source, scratch, added, args.new, args.test_per_class)
            scratch.rename(path)
        paths[name] = path
    return paths


def reference(out: Path, params, data: Path, parent: Path | None, make: bool, cache) -> dict:
    """A retrain made here (`make`) or read from a run under other kernels, with the engine code that made it."""
    if make:
        session(out, params, parent=parent, data=data, method="retrain", runtime=cache)
    if not (out / "metrics.json").exists():
        raise SystemExit(f"{out}: no reference run; make the references first (--references make)")
    stamp = json.loads(run_stamp(out).read_text())
    return {**json.loads((out / "metrics.json").read_text()), "made_by": stamp}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--base-per-class", type=int, default=1000)
    parser.add_argument("--new", type=int, default=200)
    parser.add_argument("--test-per-class", type=int, default=300)
    parser.add_argument("--arms", default="default")
    parser.add_argument("--references", choices=["make", "read"], default="make")
    parser.add_argument("--work", type=Path, default=Path("work/new_class"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--tag", default="", help="suffix of the results file, e.g. _avx2")
    parser.add_argument("--report", action="store_true", help="only re-render the results from their JSON (--tag)")
    args = parser.parse_args()
    if args.report:
        saved = json.loads((args.out / f"new_class{args.tag}.json").read_text())
        return write(args.out / f"new_class{args.tag}", saved["provenance"], saved["rows"])
    arms = [a.strip() for a in args.arms.split(",")]
    if unknown := [a for a in arms if a not in CONFIGS]:
        raise SystemExit(f"--arms: {', '.join(unknown)} not in benchmarks.harness.CONFIGS")
    prov = {**provenance(args, load_params(Path("params.yaml")), False), "machine": machine(),  # as it starts
            "command": "python -m benchmarks.new_class " + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in
                                                                      vars(args).items() if k not in {"work", "out"})}
    start, data = time.perf_counter(), versions(args.work / "data", args)
    cache = benchmark_runtime(args.work / "features")
    make, rows = args.references == "make", []
    for seed in range(args.seeds):
        params = load_params(Path("params.yaml"), [f"seed={seed}"])
        out = args.work / f"seed{seed}"
        base = out / "base"
        reference(base, params, data["base"], None, make, cache)
        for case in CASES:
            ref = reference(out / f"{case}-retrain", params, data[case], base, make, cache)
            for arm in arms:
                arm_params = load_params(Path("params.yaml"), [*CONFIGS[arm], f"seed={seed}"])
                run_dir = out / f"{case}-{slug(arm)}-{slug(machine())}"
                got = session(run_dir, arm_params, parent=base, data=data[case], method="sgm", runtime=cache)
                row = {"seed": seed, "case": case, "arm": arm, **{k: got[k] for k in KEYS},
                       "reference": {k: ref[k] for k in KEYS}, "reference_made_by": ref["made_by"],
                       "minus_reference": round(got["final_all_acc"] - ref["final_all_acc"], 3)}
                rows.append(row)
                print(f"seed {seed} {case:3s} {arm:30s} " + "  ".join(
                    f"{who} all {m['final_all_acc']:6.2f} old {m['final_old_acc']:6.2f} new {m['final_new_acc']:6.2f}"
                    for who, m in (("update", got), ("retrain", ref))) + f"  iters {got['iterations']:4d}  diff "
                      f"{row['minus_reference']:+.2f}", flush=True)
    write(args.out / f"new_class{args.tag}", {**prov, "seconds": round(time.perf_counter() - start)}, rows)


def write(path: Path, prov: dict, rows: list[dict]) -> None:
    """`path`.json (provenance, per (case, arm) summary, the rows) and `path`.md."""
    summary = {}
    for key in dict.fromkeys((r["case"], r["arm"]) for r in rows):
        mine = [r for r in rows if (r["case"], r["arm"]) == key]
        diffs = [r["minus_reference"] for r in mine]
        summary[" / ".join(key)] = {
            "mean": stat(diffs)[0], "worst": min(diffs), "pairs_within_1": sum(d >= -1.0 for d in diffs),
            "pairs": len(diffs), "iterations": stat([r["iterations"] for r in mine])[0],
            **{f"{part}_acc": stat([r[f"final_{part}_acc"] for r in mine])[0] for part in ("old", "new")},
            **{f"retrain_{part}_acc": stat([r["reference"][f"final_{part}_acc"] for r in mine])[0]
               for part in ("old", "new")}}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.with_suffix(".json").write_text(json.dumps({"provenance": prov, "summary": summary, "rows": rows},
                                                    indent=1) + "\n")
    lines = [f"# New classes on a large base: the update's arms against the retrain ({prov['machine']})", "",
             "| case / arm | all − retrain, mean | worst seed | seeds within 1.0 | old: update / retrain | "
             "new: update / retrain | iterations |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {key} | {s['mean']:+.2f} | {s['worst']:+.2f} | {s['pairs_within_1']} of {s['pairs']} | "
              f"{s['old_acc']:.2f} / {s['retrain_old_acc']:.2f} | {s['new_acc']:.2f} / {s['retrain_new_acc']:.2f} | "
              f"{s['iterations']:.0f} |" for key, s in summary.items()]
    path.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
