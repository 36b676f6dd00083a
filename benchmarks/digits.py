"""Write scikit-learn's handwritten digits (1,797 images, 8x8, 10 classes) as an ImageFolder tree: data of a kind
the project is not tuned on, for `python -m benchmarks.parity --imagefolder OUT`.

`pip install scikit-learn` first (the data ships inside that package; nothing is downloaded). Every fourth image of
a class goes to test/, the rest to train/ (about 134 and 44 per class).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out", type=Path)
    args = parser.parse_args()
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise SystemExit("scikit-learn is not installed: pip install scikit-learn") from None
    digits = load_digits()
    pixels = np.round(digits.images * (255 / 16)).astype(np.uint8)  # 17 grey levels -> 0-255
    counts: dict[int, int] = {}
    for index, (image, label) in enumerate(zip(pixels, digits.target, strict=True)):
        counts[label] = counts.get(label, 0) + 1
        split = "test" if counts[label] % 4 == 0 else "train"
        folder = args.out / split / f"digit_{label}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / f"{index:04d}.png")
    print(f"{len(pixels)} images under {args.out}")


if __name__ == "__main__":
    main()
