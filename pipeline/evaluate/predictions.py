"""Predictions computed once: the logits of a model over test images, keyed by the model's weights SHA-256 and each
image's SHA-256. The update writes its candidate's logits over the whole test split when it ends; the gate reads
them, and the champion's (written when it was the candidate), instead of predicting the same images again; the
next version's update reads its parent's. Only images the cache lacks are predicted.

Layout: `<root>/<weights sha256>.safetensors` with two tensors, `digests` (uint8, 32 bytes an image) and `logits`
(float32, a row an image), and in its header the SHA-256 of both: a file that fails it is dropped and its rows
recomputed. Nothing is unpickled.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save

from pipeline.data import ImageSet
from pipeline.evaluate.metrics import logits_of, top_class
from pipeline.files import atomic_write

log = logging.getLogger("pipeline")


def _checksum(digests: torch.Tensor, logits: torch.Tensor) -> str:
    return hashlib.sha256(digests.numpy().tobytes() + logits.numpy().tobytes()).hexdigest()


class PredictionCache:
    def __init__(self, root: Path):
        self.root = Path(root)

    def _path(self, weights: str) -> Path:
        if len(weights) != 64 or not all(c in "0123456789abcdef" for c in weights):
            raise ValueError(f"not a SHA-256 hex digest: {weights!r}")
        return self.root / f"{weights}.safetensors"

    def _read(self, weights: str) -> dict[bytes, torch.Tensor]:
        path = self._path(weights)
        if not path.exists():
            return {}
        try:
            with safe_open(path, "pt") as handle:
                expected = (handle.metadata() or {}).get("sha256")
                digests, logits = handle.get_tensor("digests"), handle.get_tensor("logits")
            if expected != _checksum(digests, logits):
                raise ValueError("checksum mismatch")
        except (SafetensorError, OSError, KeyError, ValueError) as err:
            log.warning("prediction cache %s is unreadable (%s): dropped, its rows are predicted again", path, err)
            path.unlink(missing_ok=True)
            return {}
        return {bytes(row.tolist()): logit for row, logit in zip(digests, logits, strict=True)}

    def logits(self, model, weights: str, data: ImageSet, digests: list[str]) -> torch.Tensor:
        """Logits of `model` (whose weights hash is `weights`) over `data`, whose images hash to `digests`; the
        images the cache lacks are predicted and added."""
        known = self._read(weights)
        keys = [bytes.fromhex(d) for d in digests]
        missing = [i for i, key in enumerate(keys) if key not in known]
        if missing:
            fresh = logits_of(model, data.subset(torch.tensor(missing)))
            known.update({keys[i]: row for i, row in zip(missing, fresh, strict=True)})
            self._write(weights, known)
        return torch.stack([known[key] for key in keys]) if keys else torch.empty(0, 0)

    def put(self, weights: str, digests: list[str], logits: torch.Tensor) -> None:
        known = self._read(weights)
        known.update({bytes.fromhex(d): row for d, row in zip(digests, logits, strict=True)})
        self._write(weights, known)

    def _write(self, weights: str, rows: dict[bytes, torch.Tensor]) -> None:
        digests = torch.tensor([list(key) for key in rows], dtype=torch.uint8).reshape(-1, 32)
        logits = torch.stack(list(rows.values())).float().contiguous()
        atomic_write(self._path(weights), save({"digests": digests, "logits": logits},
                                               metadata={"sha256": _checksum(digests, logits)}), "predictions:staged")


def predict_cached(model, data: ImageSet, weights: str, digests: list[str], cache: PredictionCache | None,
                   among: int | None = None) -> torch.Tensor:
    """Predicted class per image (`among`=k: the best of the first k classes), from the cache when it has them."""
    logits = cache.logits(model, weights, data, digests) if cache else logits_of(model, data)
    return top_class(logits, among)
