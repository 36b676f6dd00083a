"""On-disk cache of frozen-trunk features, keyed by image content hash.

Layout: `<root>/<trunk key>/index.json` (feature shape, shards with their SHA-256 and size, row of every image
digest) + `NNNNNN.npy` shards, memory-mapped when read. A trunk key covers the backbone, the input size, the
trunk's weights and the torch version, so changing any of them starts a new cache; the least recently used
caches are deleted beyond `max_mb`. A shard whose checksum fails is dropped and its features recomputed.
From FP16_FROM_PX input pixels on, features are stored as fp16 (in a cache of their own, `<key>-fp16`): half the
disk and page cache at the sizes where features are large; a run then differs from an uncached one by the fp16
rounding of the trunk's output (below that size cached and uncached runs give the same model bit for bit).
Nothing is unpickled: `.npy` is read with `allow_pickle=False`, the index is JSON.
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import json
import logging
import math
import os
import re
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from pipeline.config import Settings
from pipeline.data import HashCache, ImageSet
from pipeline.data.hashes import file_stat, unchanged
from pipeline.data.imagefolder import DataError, load_images
from pipeline.files import atomic_write, file_sha256
from pipeline.model import Classifier
from pipeline.model.trunk import Trunk
from pipeline.progress import Progress

log = logging.getLogger("pipeline")
INDEX = "index.json"
SHARD = re.compile(r"\d{6}\.npy")
CHUNK = 2048  # images decoded and pushed through the trunk at a time (bounds memory while filling)
FP16_FROM_PX = 128


class FeatureRows:
    """Cached features read only when rows are asked for: indexes like the float32 tensor [N, ...] it stands for
    (`rows[3:9]`, `rows[index]` read those rows from their memory-mapped shards), so a session reads the rows it
    draws and evaluates, not every image of its history."""

    def __init__(self, shards: list[np.ndarray], locations: torch.Tensor, shape: list[int]):
        self.shards, self.locations, self.shape = shards, locations, shape  # locations: [N, 2] (shard, row)

    def __len__(self) -> int:
        return len(self.locations)

    @property
    def nbytes(self) -> int:
        return len(self) * 4 * math.prod(self.shape)

    def select(self, index: torch.Tensor) -> FeatureRows:
        """The rows at `index` (a mask or positions), still unread."""
        return FeatureRows(self.shards, self.locations[index], self.shape)

    def __getitem__(self, index: slice | torch.Tensor) -> torch.Tensor:
        where = self.locations[index]
        out = torch.empty((len(where), *self.shape), dtype=torch.float32)
        for shard in where[:, 0].unique().tolist():
            picked = torch.nonzero(where[:, 0] == shard).flatten()
            rows = self.shards[shard][where[picked, 1].numpy()]
            out[picked] = torch.from_numpy(np.ascontiguousarray(rows)).float()
        return out


def _valid(index: dict) -> bool:
    """Every shard name is NNNNNN.npy (never a path out of the folder) and every row points at a listed shard."""
    return ({"shape", "shards", "rows"} <= index.keys() and all(map(SHARD.fullmatch, index["shards"]))
            and all(shard in index["shards"] for shard, _ in index["rows"].values()))


def _identity(path: Path) -> tuple:
    """A file's path and stat: another file, or the same one rewritten, has another."""
    return path, *file_stat(path)


class FeatureCache:
    def __init__(self, root: Path, max_mb: int, hashes: HashCache | None = None):
        self.root, self.max_bytes, self.hashes = Path(root), max_mb * 2**20, hashes
        self._verified: set[Path] = set()
        self._last_index: tuple[tuple | None, dict] = (None, {})

    def load(self, model: Classifier, trunk: Trunk, data_root: Path, entries: list[tuple[str, str, str]],
             class_names: list[str], img_size: int) -> ImageSet:
        """Trunk features of `entries` (relative path, class, content digest) as an ImageSet for a model with
        `trunk` attached; images missing from the cache are decoded, pushed through the trunk and stored."""
        position = {name: i for i, name in enumerate(class_names)}
        if unknown := sorted({c for _, c, _ in entries} - position.keys()):
            raise DataError(f"classes {unknown} are not among the model's classes {class_names}")
        half = img_size >= FP16_FROM_PX
        folder = self.root / (trunk.key[:32] + ("-fp16" if half else ""))
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # one filler per trunk key; others wait, then read
            index = self._index(folder)
            self._drop_corrupt(folder, index, {d for _, _, d in entries})
            extra = self._fill(folder, index, model, trunk, data_root, entries, img_size, half)
            features = self._rows(folder, index, extra, [d for _, _, d in entries])
        os.utime(folder / ".lock")  # recently used
        self._evict(keep=folder)
        targets = torch.tensor([position[c] for _, c, _ in entries], dtype=torch.long)
        return ImageSet(features, targets, class_names)

    # ---- index and shards --------------------------------------------------------------------------------

    def _index(self, folder: Path) -> dict:
        path = folder / INDEX
        if path.is_file():
            if self._last_index[0] == _identity(path):  # the train and the test split of one session: read once
                return self._last_index[1]
            try:
                index = json.loads(path.read_text())
                if _valid(index):
                    self._last_index = _identity(path), index
                    return index
            except (ValueError, UnicodeDecodeError, TypeError, AttributeError):
                pass
            log.warning("feature cache index %s is unreadable; rebuilding that cache", path)
            for shard in folder.glob("*.npy"):
                shard.unlink()
        return {"shape": None, "shards": {}, "rows": {}}

    def _write_index(self, folder: Path, index: dict) -> None:
        atomic_write(folder / INDEX, json.dumps(index).encode())
        self._last_index = _identity(folder / INDEX), index  # what this process wrote, not read again

    def _drop_corrupt(self, folder: Path, index: dict, wanted: set[str]) -> None:
        used = {index["rows"][d][0] for d in wanted if d in index["rows"]}
        unchecked = [shard for shard in sorted(used) if folder / shard not in self._verified]
        digests = self._sha256s(folder, [shard for shard in unchecked if (folder / shard).is_file()])
        for shard in unchecked:
            path, meta = folder / shard, index["shards"][shard]
            if digests.get(shard) == meta["sha256"] and path.stat().st_size == meta["bytes"]:
                self._verified.add(path)
                continue
            log.warning("feature cache shard %s is missing or fails its checksum; recomputing its features", path)
            del index["shards"][shard]
            index["rows"] = {d: loc for d, loc in index["rows"].items() if loc[0] != shard}
            path.unlink(missing_ok=True)
            self._write_index(folder, index)

    def _sha256s(self, folder: Path, shards: list[str]) -> dict[str, str]:
        """Each shard's SHA-256, from its bytes, unless the hash cache has seen the file unchanged (its size, mtime
        and inode) since it last read it: the rule the data files follow (pipeline/data/hashes.py), so a version's
        start does not read the whole history's features again."""
        began_ns = time.time_ns()
        digests, unread = unchanged(self.hashes, folder, shards)
        hashed = {shard: (file_stat(folder / shard), file_sha256(folder / shard)) for shard in unread}
        if self.hashes:
            self.hashes.remember(folder, hashed, began_ns)
        return digests | {shard: digest for shard, (_, digest) in hashed.items()}

    def _fill(self, folder: Path, index: dict, model: Classifier, trunk: Trunk, data_root: Path,
              entries: list[tuple[str, str, str]], img_size: int, half: bool) -> dict[str, torch.Tensor]:
        """Compute the features of images not yet cached; store them while the size budget allows, else keep
        them in memory (returned)."""
        missing = {}
        for path, _, digest in entries:
            if digest not in index["rows"]:
                missing.setdefault(digest, path)
        if missing:
            log.info("feature cache: computing trunk features of %d images", len(missing))
        extra: dict[str, torch.Tensor] = {}
        todo, on_disk = list(missing.items()), self._size()
        with Progress("feature cache", len(todo), "images") as progress:
            for start in range(0, len(todo), CHUNK):
                chunk = todo[start:start + CHUNK]
                features = trunk.features(model, load_images(data_root, [p for _, p in chunk], img_size))
                features = features.half() if half else features
                progress.advance(len(chunk))
                index["shape"] = list(features.shape[1:])
                buffer = io.BytesIO()
                np.save(buffer, features.numpy(), allow_pickle=False)
                if on_disk + buffer.tell() > self.max_bytes:
                    extra.update(zip([d for d, _ in chunk], features, strict=True))
                    continue
                on_disk += buffer.tell()
                shard = f"{max((int(s[:-4]) for s in index['shards']), default=0) + 1:06d}.npy"
                atomic_write(folder / shard, buffer.getvalue())
                index["shards"][shard] = {"sha256": hashlib.sha256(buffer.getvalue()).hexdigest(),
                                          "bytes": buffer.tell()}
                if self.hashes:  # the next process need not read it to check it
                    self.hashes.remember_written(folder, shard, index["shards"][shard]["sha256"])
                index["rows"].update({d: [shard, i] for i, (d, _) in enumerate(chunk)})
                self._write_index(folder, index)  # after the shard: never a dangling row
                self._verified.add(folder / shard)
        if extra:
            log.warning("feature cache over PIPELINE_FEATURE_CACHE_MB (%d MB): %d images' features kept in "
                        "memory only", self.max_bytes // 2**20, len(extra))
        return extra

    def _rows(self, folder: Path, index: dict, extra: dict[str, torch.Tensor], digests: list[str]) -> FeatureRows:
        """The rows of `digests`, left in their memory-mapped shards (or in memory, `extra`) until asked for."""
        names = sorted({index["rows"][d][0] for d in digests if d not in extra})
        shards = [np.load(folder / name, mmap_mode="r", allow_pickle=False) for name in names]
        number = {name: i for i, name in enumerate(names)}
        kept = [d for d in dict.fromkeys(digests) if d in extra]
        if kept:  # over the size budget: one more "shard", in memory
            shards.append(torch.stack([extra[d] for d in kept]).numpy())
            number.update({d: len(shards) - 1 for d in kept})
        at = {d: i for i, d in enumerate(kept)}
        locations = [(number[d], at[d]) if d in extra else (number[index["rows"][d][0]], index["rows"][d][1])
                     for d in digests]
        return FeatureRows(shards, torch.tensor(locations, dtype=torch.long).reshape(-1, 2), index["shape"] or [0])

    # ---- size budget -------------------------------------------------------------------------------------

    def _size(self) -> int:
        return sum(f.stat().st_size for f in self.root.glob("*/*.npy"))

    def _evict(self, keep: Path) -> None:
        """Delete whole caches of other trunks, least recently used first, while over the budget."""
        others = sorted((p for p in self.root.glob("*/.lock") if p.parent != keep), key=lambda p: p.stat().st_mtime)
        size = self._size()
        for used in others:
            if size <= self.max_bytes:
                return
            with open(used, "w") as lock:
                try:
                    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # in use by another process right now
                log.info("feature cache over budget: deleting %s", used.parent)
                size -= sum(f.stat().st_size for f in used.parent.glob("*.npy"))
                shutil.rmtree(used.parent, ignore_errors=True)


def feature_cache(settings: Settings, hashes: HashCache | None = None) -> FeatureCache | None:
    """The cache the settings ask for (`PIPELINE_FEATURE_CACHE_MB=0`: none); `hashes`: the shards' checksums
    remembered by stat, as the data files' are."""
    if settings.feature_cache_mb == 0:
        return None
    return FeatureCache(settings.cache_dir / "features", settings.feature_cache_mb, hashes)
