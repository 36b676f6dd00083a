"""Load benchmark: a data folder of 100,000 small images (Fashion-MNIST plus flipped/shifted copies).

v1 = classes 0-5, v2 = all 10 classes (100,000 images in all). Measures the manifest of v2 and its diff against
v1 (seconds), then a base model on v1 (a short run: its quality is not the point) and the sgm update to v2,
with wall time and peak RSS of each step. Writes load.{json,md} under --out. Run by hand:
`.venv/bin/python benchmarks/load.py`.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from pipeline.config import Settings
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


def timed_child(args: list[str]) -> dict:
    """Run a `pipeline` command in a child process: its own wall time and peak RSS."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "pipeline.cli", *args], check=True, stdout=subprocess.DEVNULL)
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {"wall_s": round(time.perf_counter() - start, 1), "peak_rss_mb_children": round(usage.ru_maxrss / 1024)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--work", default="work/load")
    args = parser.parse_args()
    work, source = Path(args.work), Settings().fashion_mnist_dir
    shutil.rmtree(work, ignore_errors=True)
    results: dict = {}

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
    lines = ["# Load benchmark: 100,000 images", "", f"`{' '.join(sys.argv)}`", "", "| measure | value |",
             "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in results.items()]
    (out / "load.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
