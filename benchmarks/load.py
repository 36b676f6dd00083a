"""Load benchmark: a data folder of 100,000 small images (Fashion-MNIST plus flipped/shifted copies).

v1 = classes 0-5, v2 = all 10 classes (100,000 images in all). Measures the manifest of v2 and its diff against
v1 (seconds), then a base model on v1 (a short run: its quality is not the point) and the sgm update to v2,
with wall time and peak RSS of each step. Writes load.{json,md} under --out. Run by hand:
`.venv/bin/python -m benchmarks.load`.

`--streaming`: peak RSS of sgm updates at 224 px (20 iterations, feature cache off) from one base (classes 0-5,
1,000 images each) to 10,000 training images, in memory and streamed (PIPELINE_MEMORY_BUDGET_MB=64), and to
90,000 (every Fashion-MNIST image plus 30,000 copies), streamed: the streamed runs' peak RSS should not grow with
the data. Writes load_streaming.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.harness import code_hash, git_commit, machine
from pipeline.config import Settings, load_params
from pipeline.data import build_manifest, diff_manifests
from pipeline.data.fashion_mnist import _FILES, CLASS_NAMES, _png_bytes, _read_idx, materialize

AUGMENTED_PER_CLASS = 3000  # 10 classes x 3000 extra train images: 60,000 + 30,000 + 10,000 test = 100,000


def augment(source: Path, root: Path, classes: list[int]) -> int:
    """Horizontally flipped and 2-pixel-shifted copies of the first train images of each class."""
    images, labels = (_read_idx(source / name) for name in _FILES["train"])
    written = 0
    for label in classes:
        folder = root / "train" / CLASS_NAMES[label]
        for k, index in enumerate(np.flatnonzero(labels == label)[:AUGMENTED_PER_CLASS]):
            pixels = images[index][:, ::-1] if k % 2 == 0 else np.roll(images[index], 2, axis=k % 4 // 2)
            (folder / f"aug_{index:05d}.png").write_bytes(_png_bytes(np.ascontiguousarray(pixels)))
            written += 1
    return written


def timed_child(args: list[str], env: dict | None = None) -> dict:
    """Run a `pipeline` command in a child process (with `env` added): its own wall time and peak RSS."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "pipeline.cli", *args], check=True, stdout=subprocess.DEVNULL,
                   env={**os.environ, **(env or {})})
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)  # the largest child so far (see metrics' peak_rss_mb)
    return {"wall_s": round(time.perf_counter() - start, 1), "peak_rss_mb_children": round(usage.ru_maxrss / 1024)}


STREAMING_BUDGET_MB = 64
# the gate's margin widened knowingly: 200 test images per old class are too few to judge at 2 points, and the
# update refuses such a split before training; this benchmark measures memory, not the gate
AT_224 = ["--set", "model.img_size=224", "--set", "update.min_iters=20", "--set", "update.max_iters=20",
          "--set", "gate.old_acc_margin=3.0"]


def stamp() -> dict:
    """Commit, engine, params (`params.yaml`, with the overrides each run names) and machine, taken at the start."""
    return {"commit": git_commit(), "code_hash": code_hash(), "machine": machine(),
            "params_hash": load_params(Path("params.yaml")).digest(), "command": "python -m benchmarks.load "
            + " ".join(sys.argv[1:])}


def streaming(work: Path, out: Path) -> None:
    source = Settings().fashion_mnist_dir
    shutil.rmtree(work, ignore_errors=True)
    materialize(source, work / "v1", list(range(6)), 1000, 200)
    shutil.copytree(work / "v1", work / "v2-10k")
    materialize(source, work / "v2-10k", list(range(6, 10)), 1000, 200)
    shutil.copytree(work / "v2-10k", work / "v2-90k")
    materialize(source, work / "v2-90k", list(range(10)))  # every image; the first 1,000 per class as before
    augment(source, work / "v2-90k", list(range(10)))
    no_cache = {"PIPELINE_FEATURE_CACHE_MB": "0"}
    streamed = {**no_cache, "PIPELINE_MEMORY_BUDGET_MB": str(STREAMING_BUDGET_MB)}
    results: dict = {"provenance": stamp(), "cores": os.cpu_count(), "budget_mb": STREAMING_BUDGET_MB,
                     "iterations": 20, "img_size": 224}
    results["base"] = timed_child(["train", "--data", str(work / "v1"), "--out", str(work / "base"), *AT_224,
                                   "--set", "train.epochs=0.2"], streamed)
    for name, data, env in [("10k in memory", "v2-10k", no_cache), ("10k streamed", "v2-10k", streamed),
                            ("90k streamed", "v2-90k", streamed)]:
        model = work / f"sgm-{name.replace(' ', '-')}"
        results[name] = timed_child(["update", "--parent", str(work / "base"), "--data", str(work / data),
                                     "--out", str(model), "--method", "sgm", *AT_224], env)
        metrics = json.loads((model / "metrics.json").read_text())
        results[name].update({k: metrics[k] for k in ("peak_rss_mb", "streamed", "train_s", "wall_s")},
                             train_images=sum(1 for _ in (work / data / "train").rglob("*.png")))
        print(name, results[name], flush=True)
    (out / "load_streaming.json").write_text(json.dumps(results, indent=2))
    prov = results["provenance"]
    lines = ["# Load benchmark: peak RSS at 224 px, in memory and streamed", "",
             f"`{prov['command']}` at commit {prov['commit']}, engine {prov['code_hash']}, {prov['machine']}.", "",
             "| run | training images | streamed | peak RSS (MB) | wall (s) |", "|---|---|---|---|---|"]
    lines += [f"| {name} | {r['train_images']} | {r['streamed']} | {r['peak_rss_mb']} | {r['wall_s']} |"
              for name, r in results.items() if isinstance(r, dict) and "streamed" in r]
    (out / "load_streaming.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--work", default="work/load")
    parser.add_argument("--streaming", action="store_true", help="the 224 px streaming runs instead")
    args = parser.parse_args()
    if args.streaming:
        streaming(Path(args.work + "-streaming"), Path(args.out))
        return
    work, source = Path(args.work), Settings().fashion_mnist_dir
    shutil.rmtree(work, ignore_errors=True)
    results: dict = {"provenance": stamp()}

    start = time.perf_counter()
    materialize(source, work / "v1", list(range(6)))
    augment(source, work / "v1", list(range(6)))
    shutil.copytree(work / "v1", work / "v2")
    materialize(source, work / "v2", list(range(6, 10)))
    augment(source, work / "v2", list(range(6, 10)))
    results["images_v2"] = sum(1 for _ in (work / "v2").rglob("*.png"))
    results["generate_s"] = round(time.perf_counter() - start, 1)

    start = time.perf_counter()
    v1 = build_manifest(work / "v1")
    results["manifest_v1_s"] = round(time.perf_counter() - start, 1)
    start = time.perf_counter()
    v2 = build_manifest(work / "v2")
    results["manifest_v2_s"] = round(time.perf_counter() - start, 1)
    start = time.perf_counter()
    diff = diff_manifests(v1, v2)
    results["diff_s"] = round(time.perf_counter() - start, 2)
    results["diff"] = diff.summary()

    results["base_train"] = timed_child(["train", "--data", str(work / "v1"), "--out", str(work / "base"),
                                         "--set", "train.epochs=0.05"])
    results["sgm_update"] = timed_child(["update", "--parent", str(work / "base"), "--data", str(work / "v2"),
                                         "--out", str(work / "v2-sgm")])
    metrics = json.loads((work / "v2-sgm" / "metrics.json").read_text())
    results["sgm_update"].update({k: metrics[k] for k in ("peak_rss_mb", "iterations", "train_s", "wall_s")})

    out = Path(args.out)
    (out / "load.json").write_text(json.dumps(results, indent=2))
    (out / "load.md").write_text(markdown(results))
    print(markdown(results))


def markdown(results: dict) -> str:
    prov = results["provenance"]
    lines = ["# Load benchmark: 100,000 images", "", f"`{prov['command']}` at commit {prov['commit']}, engine "
             f"{prov['code_hash']}, params {prov['params_hash']}, {prov['machine']}.", "", "| measure | value |",
             "|---|---|"]
    return "\n".join([*lines, *(f"| {k} | {v} |" for k, v in results.items() if k != "provenance")]) + "\n"


if __name__ == "__main__":
    main()
