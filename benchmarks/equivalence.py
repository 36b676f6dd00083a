"""Does a change move any result? Two checkouts of the code run the same sessions, through the CLI, on the same
Fashion-MNIST stream at the defaults of params.yaml (64 px, the offline pretrained EfficientNet-Lite0), and their
models are compared by the SHA-256 of the weights and by their metrics.

For a refactor of the engine: when every model is the same bit for bit, the results made before it stand for the
code after it (the record names both engine code hashes). When the retrains alone are the same (a change to the
updates), the retrains made before stand (`retrain_identical`): a benchmark redoes only its updates. The sessions
cover each path of a session: the first model, a data-growth version (`auto`, sgm, vanilla, the retrain beside the
update; sgm with its inputs streamed from the files instead of the feature cache) and a new class (sgm, `auto`).

    .venv/bin/python -m benchmarks.equivalence --before <commit> [--after <commit>]  # default: this checkout

A change of a default: `--after-set section.key=value` gives the after side the before side's value, and the record
then proves the rest of the engine unchanged (a run of the earlier engine stands for one of today's with that value;
`benchmarks.harness.reuse_or_run` still redoes every run whose params hash differs, a retrain aside).

Writes benchmarks/results/equivalence.json (the earlier proofs kept under "earlier": identical engines chain) and
exits 1 when a model differs. About 10 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.harness import code_hash, git_commit, machine
from pipeline.config import Settings
from pipeline.data.fashion_mnist import materialize

OUT = Path("benchmarks/results/equivalence.json")
COMPARED = ("method", "iterations", "final_all_acc", "final_old_acc", "final_new_acc", "train_flops")
# name -> (parent, data version, method, extra environment): in order, each parent made before it is used
SESSIONS = {
    "v1": (None, "v1", None, {}),
    "v2-auto": ("v1", "v2", "auto", {}),
    "v2-vanilla": ("v1", "v2", "vanilla", {}),
    "v2-retrain": ("v1", "v2", "retrain", {}),
    "v2-sgm-streamed": ("v1", "v2", "sgm", {"PIPELINE_MEMORY_BUDGET_MB": "1", "PIPELINE_LOADER_WORKERS": "0"}),
    "v3-sgm": ("v2-auto", "v3", "sgm", {}),
    "v3-auto": ("v2-auto", "v3", "auto", {}),
}

RETRAINS = ("v1", "v2-retrain")  # the retrain's recipe: when these match, a retrain made before stands (harness)


def make_stream(root: Path) -> dict[str, Path]:
    """v1: four classes at 400 train images; v2: 5% more of each; v3: v2 plus a fifth class of 100."""
    source, stream = Settings().fashion_mnist_dir, {}
    for name, classes, per_class in (("v1", [0, 1, 2, 3], 400), ("v2", [0, 1, 2, 3], 420), ("v3", [0, 1, 2, 3], 420)):
        materialize(source, root / name, classes, per_class, 100)
        stream[name] = root / name
    materialize(source, root / "v3", [4], 100, 100)
    return stream


def run_sessions(checkout: Path, stream: dict[str, Path], out: Path, overrides: list[str]) -> dict[str, dict]:
    """Every session of SESSIONS with `checkout`'s code (its own feature cache) and params overrides, in a fresh
    process each."""
    knows_retrain = "retrain" in subprocess.run([sys.executable, "-m", "pipeline.cli", "update", "--help"],
                                                cwd=checkout, capture_output=True, text=True).stdout
    results = {}
    for name, (parent, data, method, extra) in SESSIONS.items():
        if method == "retrain" and not knows_retrain:
            method = "joint"  # the retrain's name before it was renamed
        command = ([sys.executable, "-m", "pipeline.cli", "train"] if parent is None else
                   [sys.executable, "-m", "pipeline.cli", "update", "--parent", str(out / parent), "--method", method])
        command += ["--data", str(stream[data]), "--out", str(out / name), "--data-version", data,
                    "--set", "gate.old_acc_margin=20"]  # the gate's preflight: 100 test images per class
        command += [arg for override in overrides for arg in ("--set", override)]
        env = {**os.environ, "PYTHONPATH": str(checkout), "PIPELINE_CACHE_DIR": str(out / "cache"), **extra}
        done = subprocess.run(command, cwd=checkout, env=env, capture_output=True, text=True)
        if done.returncode:
            raise SystemExit(f"{checkout.name}: {name} failed:\n{done.stderr[-3000:]}")
        card = json.loads((out / name / "card.json").read_text())
        metrics = json.loads((out / name / "metrics.json").read_text())
        results[name] = {"weights_sha256": card["weights_sha256"], **{k: metrics.get(k) for k in COMPARED}}
        print(f"{checkout.name}: {name} {results[name]['weights_sha256'][:16]}", flush=True)
    return results


def _without_method(run: dict) -> dict:
    return {k: v for k, v in run.items() if k != "method"}  # the retrain's name changed; the models are compared


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", required=True, help="a commit")
    parser.add_argument("--after", default=None, help="a commit (default: this checkout, as it is)")
    parser.add_argument("--after-set", action="append", default=[], metavar="KEY=VALUE",
                        help="a params override for the after side's sessions (a changed default at its old value)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="equivalence-") as scratch:
        scratch = Path(scratch)
        stream = make_stream(scratch / "data")
        revs = {"before": args.before, "after": args.after}
        checkouts = {side: Path.cwd() if rev is None else scratch / side for side, rev in revs.items()}
        worktrees = [checkouts[side] for side, rev in revs.items() if rev is not None]
        try:
            for side in (side for side, rev in revs.items() if rev is not None):
                subprocess.run(["git", "worktree", "add", "--detach", str(checkouts[side]), revs[side]], check=True,
                               capture_output=True)
            sets = {"before": [], "after": args.after_set}
            runs = {side: run_sessions(path, stream, scratch / f"models-{side}", sets[side])
                    for side, path in checkouts.items()}
            hashes = {side: code_hash(path) for side, path in checkouts.items()}
        finally:
            for path in worktrees:
                subprocess.run(["git", "worktree", "remove", "--force", str(path)], check=False)
    same = {name: _without_method(runs["before"][name]) == _without_method(runs["after"][name]) for name in SESSIONS}
    record = {"provenance": {"before": {"commit": args.before, "code_hash": hashes["before"]},
                             "after": {"commit": args.after or git_commit(), "code_hash": hashes["after"],
                                       "set": args.after_set},
                             "machine": machine(),
                             "command": "python -m benchmarks.equivalence " + " ".join(sys.argv[1:])},
              "identical": all(same.values()), "retrain_identical": all(same[name] for name in RETRAINS),
              "sessions": {name: {"identical": same[name], **{
                  side: runs[side][name] for side in runs}} for name in SESSIONS}}
    if OUT.exists():  # the proofs before it, without their sessions: together they chain engines (harness.proven_equal)
        earlier = json.loads(OUT.read_text())
        record["earlier"] = [*earlier.get("earlier", []), {key: earlier[key] for key in (
            "provenance", "identical", "retrain_identical") if key in earlier}]
    OUT.write_text(json.dumps(record, indent=2) + "\n")
    print(f"{sum(same.values())} of {len(same)} sessions identical; wrote {OUT}")
    return 0 if record["identical"] else 1


if __name__ == "__main__":
    sys.exit(main())
