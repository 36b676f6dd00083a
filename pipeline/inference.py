"""`pipeline predict`: batch inference on image files (any layout, found recursively), one row per image, written
as it goes to CSV or JSON Lines. An unreadable image is reported in its row, or refuses the run with the file named
before anything is written (`on_error`)."""

from __future__ import annotations

import contextlib
import csv
import json
import os
import sys
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from pipeline.data.imagefolder import IMAGE_SUFFIXES, DataError, decode_image
from pipeline.files import clean_leftovers, scratch_prefix
from pipeline.model import INFERENCE_BATCH, Classifier
from pipeline.progress import Progress

COLUMNS = ["path", "class", "probability", "top_k", "error"]


def find_images(paths: list[Path]) -> list[Path]:
    """Each file given, and the image files under each folder given (recursively, hidden ones skipped), sorted."""
    found = []
    for path in map(Path, paths):
        if path.is_file():
            found.append(path)
        elif path.is_dir():
            found += sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
                            and not any(part.startswith(".") for part in p.relative_to(path).parts))
        else:
            raise DataError(f"{path} does not exist; give image files or folders holding them")
    if not found:
        raise DataError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) under {', '.join(map(str, paths))}")
    return found


def _decode(path: Path, img_size: int) -> torch.Tensor | str:
    try:
        return torch.from_numpy(decode_image(path, img_size))
    except DataError as err:
        return str(err)


@torch.inference_mode()
def predict_files(model: Classifier, class_names: list[str], img_size: int, files: list[Path], top_k: int,
                  on_error: str) -> Iterator[dict]:
    """One row per file, in order: the predicted class, its probability and the `top_k` classes."""
    model.eval()
    k = min(top_k, len(class_names))
    with (ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool,
          Progress("predicting", len(files), "images") as progress):
        for start in range(0, len(files), INFERENCE_BATCH):  # decoded a batch at a time: memory stays flat
            chunk = files[start:start + INFERENCE_BATCH]
            decoded = list(pool.map(lambda p: _decode(p, img_size), chunk))
            good = [i for i, d in enumerate(decoded) if torch.is_tensor(d)]
            if on_error == "fail" and len(good) < len(chunk):
                bad = next(d for d in decoded if not torch.is_tensor(d))
                raise DataError(f"{bad}; no output file was written (--on-error report records it in its row instead)")
            probs = (model.probabilities(torch.stack([decoded[i] for i in good])).cpu() if good
                     else torch.empty(0, len(class_names)))
            best = dict(zip(good, zip(*probs.topk(k, dim=1), strict=True), strict=True))
            for i, path in enumerate(chunk):
                if i not in best:
                    yield {"path": str(path), "class": None, "probability": None, "top_k": [], "error": decoded[i]}
                    continue
                values, indices = best[i]
                top = [{"class": class_names[j], "probability": round(v, 5)}
                       for v, j in zip(values.tolist(), indices.tolist(), strict=True)]
                yield {"path": str(path), "class": top[0]["class"], "probability": top[0]["probability"],
                       "top_k": top, "error": None}
            progress.advance(len(chunk))


def write_rows(rows: Iterator[dict], output: Path | None) -> dict:
    """CSV (top_k as `class:probability;...`) or JSON Lines by the output's suffix; stdout (CSV) without one.
    A file appears only complete: written beside under a temporary name, renamed at the end. Returns counts."""
    jsonl = output is not None and output.suffix.lower() in {".jsonl", ".ndjson"}
    counts = {"images": 0, "unreadable": 0}
    with contextlib.ExitStack() as stack:
        if output is None:
            handle = sys.stdout
        else:
            output.absolute().parent.mkdir(parents=True, exist_ok=True)
            clean_leftovers(output.absolute().parent, output.name)
            handle = stack.enter_context(tempfile.NamedTemporaryFile(
                "w", dir=output.absolute().parent, prefix=scratch_prefix(output.name), delete=False, newline=""))
            stack.callback(lambda: Path(handle.name).unlink(missing_ok=True))  # a no-op once renamed
        writer = None if jsonl else csv.DictWriter(handle, fieldnames=COLUMNS, lineterminator="\n")
        if writer:
            writer.writeheader()
        for row in rows:
            counts["images"] += 1
            counts["unreadable"] += row["error"] is not None
            if writer:
                writer.writerow({**row, "top_k": ";".join(f"{t['class']}:{t['probability']}" for t in row["top_k"])})
            else:
                handle.write(json.dumps(row) + "\n")
        if output is not None:
            handle.close()
            os.replace(handle.name, output)
    return counts
