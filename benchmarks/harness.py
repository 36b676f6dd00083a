"""What every benchmark shares: provenance (commit, engine code hash, machine), run reuse, streams and statistics.

A benchmark script is an experiment; the pieces here are the one place each fact about a run is made, so that every
results file records the same provenance and a run is reused under the same rule whichever script asks for it.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import shutil
import statistics
import subprocess
from collections.abc import Callable
from pathlib import Path

import torch

from pipeline.config import Params, Settings, load_params
from pipeline.data.fashion_mnist import materialize
from pipeline.data.imagefolder import scan_imagefolder
from pipeline.device import describe, resolve_device
from pipeline.model.feature_cache import FeatureCache
from pipeline.report import read_curve
from pipeline.runtime import Runtime, runtime
from pipeline.train import run_session

# The production stream: v1 = Fashion-MNIST classes 0-7 at 2,800 train images each; then every known class grows by
# 1-5% a version (RATES, in turn), class 8 and then class 9 arrive (NEW_CLASS) and one class grows 20% once (BURST).
BASE_CLASSES, BASE_PER_CLASS, TEST_PER_CLASS, MAX_PER_CLASS = range(8), 2800, 500, 6000
VERSIONS = 23
RATES = (0.03, 0.01, 0.05, 0.02, 0.04)  # growth of every known class at a data-growth version, in turn
NEW_CLASS = {6: (8, 300), 17: (9, 300)}  # version -> (class, train images)
BURST = {12: (4, 0.20)}  # version -> (class, growth)


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


def made_on(prov: dict) -> str:
    """The machine a results file's runs were made on, or each seed's when they were made on several (`machines`)."""
    machines = prov.get("machines") or [prov["machine"]]
    if len(set(machines)) == 1:
        return machines[0]
    return "; ".join(f"seed {seed}: {where}" for seed, where in enumerate(machines))


def cost_ratio(rows: list[dict], key: str) -> float | None:
    """The retrains' total `key` (train_flops, wall_s) over the chain's at the same versions (`rows`, each with its
    `retrain` and every `chain` candidate), or None without a row."""
    chain = sum(c[key] for r in rows for c in r["chain"])
    return round(sum(r["retrain"][key] for r in rows) / chain, 2) if rows else None


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
    measured against its parent, `old_acc_before` and `negative_flip_rate`, are those of the parent it had), and an
    engine proven to give the same retrains counts though its updates differ. A run whose folder is gone is read
    from the LEDGER when one is kept (its model made again only when a later run needs it: `present`), and is made
    on its unit's machine only (`Ledger.home`; elsewhere: `Elsewhere`)."""
    home = maker(out)
    expected = {"params_hash": params.digest(), "code_hash": engine_code(), "machine": home}
    found = finished(out)
    if found is not None:
        codes = (expected["code_hash"], *proven_equal(expected["code_hash"], retrain=bool(reads)))
        same_params = found["stamp"]["params_hash"] == expected["params_hash"]
        if reads and found["card_params"] is not None:
            current = params.model_dump()
            same_params = same_params or all(found["card_params"].get(key) == current[key] for key in reads)
        if found["stamp"]["machine"] == home and found["stamp"]["code_hash"] in codes and same_params:
            if LEDGER is not None and (out / "metrics.json").exists():
                LEDGER.record(out, found)  # a run made before the ledger was kept joins it
            elif LEDGER is not None:
                _absent[out] = lambda: _remade(out, found, run, args)
            return found["metrics"]
    if home != machine():
        raise Elsewhere(out, home)
    shutil.rmtree(out, ignore_errors=True)
    metrics = run(*args)
    run_stamp(out).write_text(json.dumps(expected))
    if LEDGER is not None:
        LEDGER.record(out, finished(out))
    return metrics


def run_stamp(out: Path) -> Path:
    """Beside a run's folder, what made it: params hash, engine code hash, machine."""
    return out.with_name(out.name + ".provenance.json")


def finished(out: Path) -> dict | None:
    """A finished run's stamp, metrics, card params and weights checksum: from its folder, else from the LEDGER."""
    stamp = run_stamp(out)
    if (out / "metrics.json").exists() and stamp.exists():
        card = json.loads((out / "card.json").read_text()) if (out / "card.json").exists() else {}
        return {"stamp": json.loads(stamp.read_text()), "metrics": json.loads((out / "metrics.json").read_text()),
                "card_params": card.get("params"), "weights_sha256": card.get("weights_sha256")}
    return LEDGER.get(out) if LEDGER is not None else None


class Elsewhere(Exception):
    """A run this machine may not make: its unit's runs were made on another machine (no run reproduces bit for bit
    on another, and a unit's runs are compared with each other: one machine's arithmetic and walls)."""

    def __init__(self, out: Path, home: str) -> None:
        super().__init__(f"{out}: its unit's runs are made on {home}, not on this machine ({machine()})")


class Ledger:
    """The finished runs of a long benchmark in one results file, committed as the runs come: a session on a fresh
    machine resumes from it, the runs' folders (and their weights) gone. A run read from it has its metrics, stamp
    and weights checksum, not its model; the model is made again only when a later run needs it (a parent, a gate's
    champion), and must come out with the recorded checksum (same engine, same machine: bit for bit), else the
    ledger is refused. Gate results are kept beside their candidate. Keys: folders under `root`. Runs come in units,
    the folders `depth` levels under `root` (the production benchmark's models/seed<N>: one seed's runs), each made
    on one machine: a session on another reads a unit's runs back and makes none of it (`home`), so that sessions
    on two kinds of machine advance different units of one benchmark."""

    def __init__(self, path: Path, root: Path, depth: int = 1) -> None:
        self.path, self.root, self.depth = path, root, depth
        self.runs: dict[str, dict] = json.loads(path.read_text())["runs"] if path.exists() else {}

    def key(self, out: Path) -> str:
        return out.relative_to(self.root).as_posix()

    def home(self, out: Path) -> str:
        """The machine that makes the runs of `out`'s unit: the one its recorded runs were made on, else this one."""
        unit = self.key(out).split("/")[:self.depth]
        made = {run["stamp"]["machine"] for key, run in self.runs.items() if key.split("/")[:self.depth] == unit}
        if len(made) > 1:
            raise RuntimeError(f"{self.path}: the runs of {'/'.join(unit)} were made on {len(made)} machines")
        return made.pop() if made else machine()

    def get(self, out: Path) -> dict | None:
        return self.runs.get(self.key(out))

    def record(self, out: Path, run: dict) -> None:
        """`run` (finished's) as the record of `out`; its gates are kept while its stamp and weights are the same."""
        before = self.get(out)
        same = before is not None and all(before[k] == run[k] for k in ("stamp", "weights_sha256"))
        if same and before["metrics"] == run["metrics"]:
            return
        self.runs[self.key(out)] = {**run, "gates": before["gates"] if same else {}}
        self._write()

    def gate(self, candidate: Path, champion: Path, reference: Path | None, rules: dict,
             judge: Callable[[], dict]) -> dict:
        """The gate's result for `candidate` against `champion` (and `reference`), read back when it was judged under
        the same `rules` (the result records its rules), else judged and kept."""
        run, key = self.get(candidate), f"{self.key(champion)}|{self.key(reference) if reference else ''}"
        kept = run and run["gates"].get(key)
        if kept and kept["rules"] == rules:
            return kept
        result = judge()
        if run is not None:
            run["gates"][key] = result
            self._write()
        return result

    def _write(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        scratch = self.path.with_name(f".{self.path.name}")
        scratch.write_text(json.dumps({"runs": dict(sorted(self.runs.items()))}, indent=1))
        scratch.replace(self.path)


LEDGER: Ledger | None = None  # set by a benchmark that keeps one (benchmarks.production)
_absent: dict[Path, Callable[[], None]] = {}  # runs read from the ledger without their folder -> how to make them again


def maker(out: Path) -> str:
    """The machine that makes `out`: its unit's (`Ledger.home`) when a LEDGER is kept, else this one."""
    return LEDGER.home(out) if LEDGER is not None else machine()


def present(*folders: Path | None) -> None:
    """Make again, from the ledger, every run among `folders` that was read back without its model."""
    for folder in folders:
        if folder is not None and folder in _absent and not (folder / "metrics.json").exists():
            _absent.pop(folder)()


def judged(candidate: Path, champion: Path, reference: Path | None, rules: dict, judge: Callable[[], dict]) -> dict:
    """A gate's result: `judge()`, or with a LEDGER the result it kept for the same pair under the same rules."""
    return judge() if LEDGER is None else LEDGER.gate(candidate, champion, reference, rules, judge)


def _remade(out: Path, recorded: dict, run, args) -> None:
    if recorded["stamp"]["machine"] != machine():
        raise Elsewhere(out, recorded["stamp"]["machine"])
    run(*args)
    made = json.loads((out / "card.json").read_text())["weights_sha256"]
    if made != recorded["weights_sha256"]:
        raise RuntimeError(f"{out} made again has weights {made[:12]}, its ledger record "
                           f"{recorded['weights_sha256'][:12]}: this machine does not reproduce the recorded runs; "
                           f"move {LEDGER.path} aside to start anew")
    run_stamp(out).write_text(json.dumps(recorded["stamp"]))


def session(out: Path, params: Params, *, parent: Path | None, data: Path, method: str, runtime: Runtime,
            manifest=None, reads: tuple[str, ...] = ()) -> dict:
    """One session of the engine (`run_session`) into `out`, or its metrics when it was made already (reuse_or_run);
    a parent read from the ledger is made again first."""
    def run() -> dict:
        present(parent)
        return run_session(parent, data, out, params, method, None, manifest, runtime)

    return reuse_or_run(out, params, run, reads=reads)


RETRAIN_READS = ("seed", "model", "train", "eval")  # what a retrain's model and curve depend on


@functools.cache
def proven_equal(code: str, retrain: bool = False) -> tuple[str, ...]:
    """Earlier engine code hashes whose models `benchmarks/results/equivalence.json` shows identical to `code`'s: its
    proof and the earlier ones it keeps, chained (A gives B's models and B gives C's: A gives C's). A proof made with
    `--after-set` (a changed default at its old value) chains too: reuse_or_run still asks for today's params hash.
    `retrain`: engines whose retrains are proven identical (`retrain_identical`), whatever their updates did."""
    record = Path("benchmarks/results/equivalence.json")
    if not record.exists():
        return ()
    latest = json.loads(record.read_text())
    proofs = [p["provenance"] for p in [*latest.get("earlier", []), latest]
              if p["identical"] or (retrain and p.get("retrain_identical"))]
    same, grown = {code}, True
    while grown:
        grown = False
        for proof in proofs:
            pair = {proof["before"]["code_hash"], proof["after"]["code_hash"]}
            if pair & same and not pair <= same:
                same |= pair
                grown = True
    return tuple(sorted(same - {code}))


def stat(values: list) -> tuple[float | None, float | None]:
    values = [v for v in values if v is not None]
    if not values:
        return None, None
    return round(statistics.mean(values), 3), round(statistics.stdev(values), 3) if len(values) > 1 else 0.0


def finish_figure(fig, axes, png: Path) -> None:
    """Legends, grids, the layout, and the PNG written and closed."""
    import matplotlib.pyplot as plt

    for ax in axes:
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)


def class_counts(versions: int = VERSIONS) -> list[dict[int, int]]:
    """Train images per class at each version (index 0 = v1)."""
    counts = [dict.fromkeys(BASE_CLASSES, BASE_PER_CLASS)]
    growth = 0
    for version in range(2, versions + 1):
        now = dict(counts[-1])
        if version in NEW_CLASS:
            label, n = NEW_CLASS[version]
            now[label] = n
        elif version in BURST:
            label, share = BURST[version]
            now[label] = min(MAX_PER_CLASS, round(now[label] * (1 + share)))
        else:
            rate = RATES[growth % len(RATES)]
            growth += 1
            now = {label: min(MAX_PER_CLASS, round(n * (1 + rate))) for label, n in now.items()}
        counts.append(now)
    return counts


def kind(version: int) -> str:
    return "class-incremental" if version in NEW_CLASS else "data-growth"


def materialize_versions(root: Path, versions: int) -> list[Path]:
    """Each version as an ImageFolder tree; a version's files are hard links to the previous one's plus its own."""
    paths, previous = [], None
    for number, counts in enumerate(class_counts(versions), start=1):
        path = root / f"v{number}"
        if not path.exists():
            scratch = root / f".v{number}"
            shutil.rmtree(scratch, ignore_errors=True)
            if previous:
                shutil.copytree(previous, scratch, copy_function=hardlink)
            for n in sorted(set(counts.values())):
                materialize(Settings().fashion_mnist_dir, scratch, [c for c, k in counts.items() if k == n], n,
                            TEST_PER_CLASS)
            scratch.rename(path)
        paths.append(path)
        previous = path
    return paths


def hardlink(source: str, target: str) -> None:
    Path(target).hardlink_to(source)


# The update recipe's arms and the cost comparisons that parity and growth share.
# name -> params overrides (beside the default, each changes one thing)
CONFIGS = {
    "default": [],  # sgm without LoRA, with the weight average (ema 0.95), since the quick-scale ablation
    "previous default (lora, no ema)": ["sgm.lora=true", "sgm.ema_decay=null"],
    "no ema": ["sgm.ema_decay=null"],
    "ema 0.98": ["sgm.ema_decay=0.98"],
    "ema 0.9": ["sgm.ema_decay=0.9"],
    "lora": ["sgm.lora=true"],
    "passes=2": ["update.new_data_passes=2"],
    "passes=1": ["update.new_data_passes=1"],
    "passes=4": ["update.new_data_passes=4"],
    "lr 5e-4": ["update.lr=5e-4"],
    "lr 5e-4 + head 5e-4": ["update.lr=5e-4", "sgm.head_lr=5e-4"],
    "no soft targets": ["sgm.soft_targets=false"],
    "no frozen rows": ["sgm.freeze_old_rows=false"],
    "passes=8": ["update.new_data_passes=8"],
    "max_iters 3000": ["update.max_iters=3000"],  # the budget rule uncapped at full scale (it asks 3000 there)
    "cooldown 0.9": ["update.cooldown_share=0.9"],  # the retrain's schedule: warm-up, then linear decay to zero
    # several new classes at once: 0.15 of each batch for each of two (the default gives 0.15 to them together)
    "new class share 0.3": ["update.new_class_share=0.3"],
}

ISO_EPOCHS = (1, 2)  # retrain budgets (train.epochs) run beside the default one for the iso-accuracy cost
ISO_TOLERANCE = 0.1  # points: a cheaper recipe within this of the 3-epoch retrain's mean counts as equally accurate

COLUMNS = ["final_all_acc", "final_old_acc", "final_new_acc", "stability_gap", "gap_S", "iterations", "wall_s",
           "train_flops"]


def shorter_retrains(parent: Path, data: Path, retrain_dir: Path, seed: int, args, cache: Runtime) -> dict:
    """Retrains at train.epochs ISO_EPOCHS, each a run of its own (`<retrain_dir>-e<epochs>`): budget -> cost."""
    budgets = {}
    for epochs in ISO_EPOCHS:
        shorter = load_params(Path("params.yaml"), [*args.set, f"seed={seed}", f"train.epochs={epochs}"])
        run_dir = retrain_dir.with_name(f"{retrain_dir.name}-e{epochs}")
        made = session(run_dir, shorter, parent=parent, data=data, method="retrain", runtime=cache)
        budgets[str(epochs)] = cost(made)
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


def cost(metrics: dict) -> dict:
    return {k: metrics[k] for k in ("final_all_acc", "iterations", "wall_s", "train_flops")}


def iso_cost(update_metrics: dict, budgets: dict) -> dict | None:
    """The cheapest retrain budget that ends at or above the update's final all-class accuracy (None: none did)."""
    reached = [b for b in budgets.values() if b["final_all_acc"] >= update_metrics["final_all_acc"]]
    return min(reached, key=lambda b: b["wall_s"]) if reached else None


def old_acc_eval(retrain_dir: Path, update_metrics: dict) -> float:
    """The retrain's final old-class accuracy on the continual-evaluation subset (the same images)."""
    return read_curve(retrain_dir)[-1]["old_acc"] or update_metrics["old_acc_before_eval"]


def slug(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name).strip("_")


def cell(column: str, value) -> str:
    if not value or value[0] is None:
        return "–"
    mean, std = value
    if column == "train_flops":
        return f"{mean / 1e12:.2f} T"
    return f"{mean:.4g} ± {std:.2g}" if column not in {"iterations", "wall_s"} else f"{mean:.0f} ± {std:.0f}"

