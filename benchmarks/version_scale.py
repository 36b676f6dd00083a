"""The whole version at two base sizes: the same increment (+60 train images in each of Fashion-MNIST's ten classes)
on a base of 1,000 and of 5,900 images per class, through the product's own commands run as processes, as a user or
a scheduler runs them: `pipeline update --method sgm`, then `pipeline gate` against the parent. Each is timed from
outside (process start, imports and writing included); the session's own breakdown comes from its metrics
(`stages_s`). The parent is a one-epoch retrain of the base (its accuracy is not what is measured here); the hash,
feature and prediction caches are warm for the base and cold for the increment, as after the parent's own version
(restored to the state the parent's training left them in before every run).

    .venv/bin/python -m benchmarks.version_scale                                  # about 25 min here
    .venv/bin/python -m benchmarks.version_scale --bases 100,300 --increment 20 --name version_scale_quick

Writes benchmarks/results/version_scale.{json,md}. Targets: the version's wall (update and gate)
at 5,900 per class within 1.1x of at 1,000 per class; outside the train loop at most 25% of the version's wall.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch

from benchmarks.harness import TEST_PER_CLASS, engine_code, git_commit, hardlink, machine
from pipeline.config import Settings, load_params
from pipeline.data.fashion_mnist import materialize

CLASSES = list(range(10))
RATIO_TARGET, OUTSIDE_TARGET = 1.1, 0.25


def cli(*args: str, env: dict[str, str]) -> float:
    """Run `pipeline ARGS` as a process; its wall in seconds. Exit 1 is the gate's reject, a result here."""
    return timed_process("-m", "pipeline.cli", *args, env=env)


def timed_process(*args: str, env: dict[str, str]) -> float:
    """The wall of `python ARGS` as a process, in seconds (`-c "import ..."`: what a process pays to start)."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True)
    if done.returncode not in (0, 1):
        raise SystemExit(f"python {' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return round(time.perf_counter() - start, 2)


def link_shards(source: str, target: str) -> None:
    """Feature shards are never written in place (a new file replaces one): linked; anything else copied."""
    (hardlink if source.endswith(".npy") else shutil.copy2)(source, target)


def version_at(base: int, increment: int, work: Path) -> dict:
    """One base: the parent on the base (not timed), the data folder grown in place to the new version as a DVC
    checkout grows (the same path, the base's files untouched), then the version's update and gate (timed)."""
    root = work / f"base{base}"
    data, env = root / "data", {**os.environ, "PIPELINE_CACHE_DIR": str(root / "cache")}
    if not (root / "cache-parent").exists():  # the parent, and the caches as its training left them
        shutil.rmtree(root, ignore_errors=True)
        materialize(Settings().fashion_mnist_dir, data, CLASSES, base, TEST_PER_CLASS)
        cli("train", "--data", str(data), "--out", str(root / "parent"), "--set", "train.epochs=1", env=env)
        shutil.copytree(root / "cache", root / ".cache-parent")
        (root / ".cache-parent").rename(root / "cache-parent")
    materialize(Settings().fashion_mnist_dir, data, CLASSES, base + increment, TEST_PER_CLASS)  # the new version
    shutil.rmtree(root / "candidate", ignore_errors=True)
    shutil.rmtree(root / "cache", ignore_errors=True)  # warm for the base, cold for the increment, every run
    shutil.copytree(root / "cache-parent", root / "cache", copy_function=link_shards)
    update_s = cli("update", "--parent", str(root / "parent"), "--data", str(data), "--out", str(root / "candidate"),
                   "--method", "sgm", env=env)
    gate_s = cli("gate", "--candidate", str(root / "candidate"), "--champion", str(root / "parent"), "--data",
                 str(data), env=env)
    start_s = timed_process("-c", "import pipeline.cli, pipeline.gate, pipeline.train", env=env)
    session = json.loads((root / "candidate" / "metrics.json").read_text())
    version_s = update_s + gate_s
    return {"base_per_class": base, "increment_per_class": increment, "train_images": len(CLASSES) * (base + increment),
            "update_command_s": update_s, "gate_command_s": gate_s, "version_s": round(version_s, 2),
            "session_s": session["wall_s"], "train_loop_s": session["train_s"], "iterations": session["iterations"],
            "outside_train_loop": round(1 - session["train_s"] / version_s, 3),
            "outside_session_s": round(version_s - session["wall_s"], 2), "process_start_s": start_s,
            "session_stages_s": session["stages_s"]}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bases", default="1000,5900", help="train images per class of each base, comma-separated")
    parser.add_argument("--increment", type=int, default=60, help="new train images per class")
    parser.add_argument("--work", type=Path, default=Path("work/version_scale"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--name", default="version_scale")
    args = parser.parse_args(argv)
    params_hash = load_params(Path("params.yaml")).digest()
    prov = {"commit": git_commit(), "code_hash": engine_code(), "params_hash": params_hash,
            "machine": machine(), "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(), "seeds": [0],
            "command": " ".join(["python -m benchmarks.version_scale", *(argv or sys.argv[1:])])}
    rows = [version_at(int(base), args.increment, args.work) for base in args.bases.split(",")]
    ratio = round(rows[-1]["version_s"] / rows[0]["version_s"], 3)
    targets = {"ratio_largest_to_smallest": ratio, "ratio_target": RATIO_TARGET, "ratio_met": ratio <= RATIO_TARGET,
               "outside_target": OUTSIDE_TARGET,
               "outside_met": all(row["outside_train_loop"] <= OUTSIDE_TARGET for row in rows)}
    (args.out / f"{args.name}.json").write_text(json.dumps({"provenance": prov, "rows": rows, "targets": targets},
                                                           indent=2))
    stages = list(rows[0]["session_stages_s"])
    lines = [f"# The whole version at two base sizes\n\ncommit {prov['commit']}, engine {prov['code_hash']}, params "
             f"{prov['params_hash']}, {prov['machine']}; `{prov['command'].strip()}`.\n",
             "| base / class | update command | gate command | version | train loop | outside the train loop | "
             "outside the session | a process's start | " + " | ".join(stages) + " |",
             "|---" * (8 + len(stages)) + "|"]
    lines += [f"| {row['base_per_class']:,} | {row['update_command_s']} s | {row['gate_command_s']} s | "
              f"{row['version_s']} s | {row['train_loop_s']} s | {row['outside_train_loop']:.0%} | "
              f"{row['outside_session_s']} s | {row['process_start_s']} s | "
              + " | ".join(f"{row['session_stages_s'][k]}" for k in stages) + " |"
              for row in rows]
    lines.append(f"\nThe version at {rows[-1]['base_per_class']:,} per class against {rows[0]['base_per_class']:,}: "
                 f"{ratio}x (target ≤ {RATIO_TARGET}x: {'met' if targets['ratio_met'] else 'missed'}); outside the "
                 f"train loop ≤ {OUTSIDE_TARGET:.0%}: {'met' if targets['outside_met'] else 'missed'}.")
    (args.out / f"{args.name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
