"""Where and how a run computes (device, memory budget, loader processes, caches) and how it loads a split: what
training, the gate and `pipeline evaluate` share, with no training code in it. From the settings, never from
params.yaml: the same params give the same model on any machine, up to floating-point order."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from pipeline.config import LOADER_WORKERS, Settings
from pipeline.data import HashCache, ImageSet
from pipeline.device import resolve_device
from pipeline.evaluate import PredictionCache
from pipeline.model.feature_cache import FeatureCache, feature_cache

MEMORY_SHARE = 0.5  # default memory budget: this share of the RAM available when a run starts


@dataclass(frozen=True)
class Runtime:
    device: torch.device = torch.device("cpu")
    features: FeatureCache | None = None  # frozen-trunk features, per trunk and image hash
    predictions: PredictionCache | None = None  # logits over test images, per model weights and image hash
    memory_mb: int | None = None  # decoded inputs of a run beyond this stream from disk; None: MEMORY_SHARE
    workers: int = LOADER_WORKERS
    hashes: HashCache | None = None  # files' SHA-256 by (path, size, mtime, inode): manifests read only new files

    def memory_budget(self) -> int:
        """Bytes of decoded inputs (or features) a run may hold in memory."""
        if self.memory_mb is not None:
            return self.memory_mb * 2**20
        return int(MEMORY_SHARE * _available_bytes())


def _available_bytes() -> int:
    """RAM available to a new allocation (Linux's MemAvailable, page cache included), else free RAM."""
    try:
        meminfo = Path("/proc/meminfo").read_text()
        return int(next(line.split()[1] for line in meminfo.splitlines() if line.startswith("MemAvailable:"))) * 1024
    except (OSError, StopIteration):
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def runtime(settings: Settings, device: str | None = None) -> Runtime:
    """The runtime the settings describe; `device` (a --device option) before $PIPELINE_DEVICE."""
    hashes = hash_cache(settings)
    return Runtime(resolve_device(device or settings.device), feature_cache(settings, hashes),
                   PredictionCache(settings.cache_dir / "predictions"), settings.memory_budget_mb,
                   settings.loader_workers, hashes)


def hash_cache(settings: Settings) -> HashCache | None:
    """The files' hashes remembered by stat (pipeline/data/hashes.py), unless the settings turn it off."""
    return HashCache(settings.cache_dir / "hashes.sqlite") if settings.hash_cache else None


def decoded_bytes(images: int, img_size: int) -> int:
    return images * 3 * img_size * img_size  # uint8 RGB


def load_split(data_root: Path, entries: list[tuple[str, str]], class_names: list[str], img_size: int,
               runtime: Runtime) -> ImageSet:
    """The images of `entries` (e.g. a test split to judge on), decoded when they fit the memory budget, else
    streamed from their files as predictions ask for them."""
    return ImageSet.load(data_root, entries, class_names, img_size,
                         decoded_bytes(len(entries), img_size) > runtime.memory_budget())
