"""Materialize Debian's Fashion-MNIST IDX files (package dataset-fashion-mnist) as an ImageFolder tree."""

from __future__ import annotations

import gzip
import io
from pathlib import Path

import numpy as np
from PIL import Image

from pipeline.data.imagefolder import DataError

CLASS_NAMES = ["t-shirt_top", "trouser", "pullover", "dress", "coat",
               "sandal", "shirt", "sneaker", "bag", "ankle_boot"]
_FILES = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
          "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}


def parse_classes(spec: str) -> list[int]:
    """'0-5' or '0,2,7' or '6-7,9' -> sorted class indices."""
    chosen: set[int] = set()
    for part in spec.split(","):
        lo, _, hi = part.strip().partition("-")
        try:
            chosen.update(range(int(lo), int(hi or lo) + 1))
        except ValueError as err:
            raise DataError(f"--classes {spec!r}: expected e.g. 0-5 or 0,2,7") from err
    if not chosen or not chosen <= set(range(10)):
        raise DataError(f"--classes {spec!r}: Fashion-MNIST classes are 0-9")
    return sorted(chosen)


def _read_idx(path: Path) -> np.ndarray:
    if not path.is_file():
        raise DataError(f"{path} is missing: install it with `apt-get install -y dataset-fashion-mnist` "
                        "or point PIPELINE_FASHION_MNIST_DIR at the IDX files")
    raw = gzip.decompress(path.read_bytes())
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def _png_bytes(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode="L").save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()


def materialize(source: Path, out: Path, classes: list[int], train_per_class: int | None = None,
                test_per_class: int | None = None) -> dict[str, int]:
    """Write `out/{train,test}/<class>/<split>_<index>.png`, the first N of each class in file order.

    Deterministic: the same arguments give the same bytes, and a larger N gives a superset of files,
    so growing a version only adds files. Test images identical to a train image are left out (leakage).
    """
    arrays = {split: (_read_idx(source / images), _read_idx(source / labels))
              for split, (images, labels) in _FILES.items()}
    train_hashes = {img.tobytes() for img in arrays["train"][0]}
    written = {}
    for split, (images, labels) in arrays.items():
        limit = train_per_class if split == "train" else test_per_class
        count = 0
        for label in classes:
            folder = out / split / CLASS_NAMES[label]
            folder.mkdir(parents=True, exist_ok=True)
            indices = np.flatnonzero(labels == label)
            if split == "test":
                indices = [i for i in indices if images[i].tobytes() not in train_hashes]
            for index in indices[:limit]:
                target = folder / f"{split}_{index:05d}.png"
                if not target.exists():
                    target.write_bytes(_png_bytes(images[index]))
                count += 1
        written[split] = count
    return written
