"""What a session reads, behind one interface: the training pool and the test split as `ImageSet`s whose rows
are decoded images in memory, image files decoded as batches are asked for (when the run's images would pass
the memory budget), or cached frozen-trunk features (with the trunk attached to the model). The recipe asks them
for batches and predictions and never needs to know which stands behind."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from pipeline.config import LOADER_WORKERS, Params, Settings
from pipeline.data import ImageSet, Manifest
from pipeline.device import resolve_device
from pipeline.evaluate import PredictionCache
from pipeline.model import Classifier, trainable_groups
from pipeline.model.trunk import Trunk
from pipeline.train.features import FeatureCache, feature_cache

log = logging.getLogger("pipeline")
MEMORY_SHARE = 0.5  # default memory budget: this share of the RAM available when a run starts
FEATURE_BYTES = 4  # float32 cached features


@dataclass(frozen=True)
class Engine:
    """Where and how a session runs, from the settings (never from params.yaml: the same params give the same
    model on any machine, up to floating-point order)."""

    device: torch.device = torch.device("cpu")
    features: FeatureCache | None = None
    predictions: PredictionCache | None = None  # logits over test images, per model weights and image hash
    memory_mb: int | None = None  # decoded inputs of a run beyond this stream from disk; None: MEMORY_SHARE
    workers: int = LOADER_WORKERS

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


def engine(settings: Settings, device: str | None = None) -> Engine:
    """The engine the settings describe; `device` (a --device option) before $PIPELINE_DEVICE."""
    return Engine(resolve_device(device or settings.device), feature_cache(settings),
                  PredictionCache(settings.cache_dir / "predictions"), settings.memory_budget_mb,
                  settings.loader_workers)


@dataclass
class Inputs:
    pool: ImageSet  # the training images (or their features)
    held: ImageSet  # the validation slice held out of them (may be empty)
    test: ImageSet  # the whole test split, the same kind of rows
    trunk: Trunk | None  # attached to the model while the rows are features

    def for_model(self, other: Classifier, params: Params, engine: Engine, data_root: Path,
                  manifest: Manifest) -> ImageSet:
        """The test split as `other` (e.g. the parent beside a retrain) can take it: the same cached features
        when it has the same frozen trunk, else the images."""
        if self.trunk is None:
            return self.test
        if self.trunk == _split(other, params, engine.features):
            self.trunk.attach(other)  # no method trains the trunk: the cached features serve both
            return self.test
        return load_split(data_root, manifest.entries("test"), self.test.class_names, params.model.img_size, engine)

    def release(self, model: Classifier) -> None:
        """The model takes images again (before it is saved)."""
        if self.trunk:
            self.trunk.detach(model)


def load_split(data_root: Path, entries: list[tuple[str, str]], class_names: list[str], img_size: int,
               engine: Engine) -> ImageSet:
    """The images of `entries` (e.g. a test split to judge on), decoded when they fit the memory budget, else
    streamed from their files as predictions ask for them."""
    return ImageSet.load(data_root, entries, class_names, img_size, _decoded_bytes(len(entries), img_size) >
                         engine.memory_budget())


def _decoded_bytes(images: int, img_size: int) -> int:
    return images * 3 * img_size * img_size  # uint8 RGB


def _split(model: Classifier, params: Params, features: FeatureCache | None) -> Trunk | None:
    if features is None:
        return None
    trunk = Trunk.split(model, trainable_groups(model, params.model.frozen_groups), params.model.img_size)
    if trunk is None:
        log.info("feature cache off: %s has no frozen trunk to cache at model.frozen_groups=%d",
                 params.model.backbone, params.model.frozen_groups)
    return trunk


def open_inputs(model: Classifier, params: Params, engine: Engine, data_root: Path, manifest: Manifest,
                class_names: list[str], train_entries: list[tuple[str, str]],
                held_entries: list[tuple[str, str]] = ()) -> Inputs:
    """Cached trunk features when the cache is on and they fit the memory budget (computed only for images the
    cache has not seen; the trunk then attached to `model`), else images: decoded now when they fit the budget,
    streamed from their files when not. Each image is held once: the training pool, the held-out slice and
    the test split are loaded apart."""
    test_entries, size, budget = manifest.entries("test"), params.model.img_size, engine.memory_budget()
    rows = len(train_entries) + len(held_entries) + len(test_entries)
    trunk = _split(model, params, engine.features)
    if trunk is not None:
        feature_bytes = rows * FEATURE_BYTES * _feature_elements(model, trunk, size)
        if feature_bytes > budget:
            log.info("feature cache skipped: the features of %d images (%d MB) exceed the memory budget (%d MB)",
                     rows, feature_bytes >> 20, budget >> 20)
            trunk = None
    if trunk is None:
        stream = _decoded_bytes(rows, size) > budget
        if stream:
            log.info("streaming %d images from %s: decoded they would take %d MB, over the memory budget (%d MB, "
                     "PIPELINE_MEMORY_BUDGET_MB)", rows, data_root, _decoded_bytes(rows, size) >> 20, budget >> 20)
        return Inputs(*(ImageSet.load(data_root, entries, class_names, size, stream)
                        for entries in (train_entries, held_entries, test_entries)), None)

    def features(entries: list[tuple[str, str]]) -> ImageSet:
        hashed = [(p, c, manifest.files[p.partition("/")[0]][p][1]) for p, c in entries]  # "<split>/<class>/<f>"
        return engine.features.load(model, trunk, data_root, hashed, class_names, size)

    inputs = Inputs(features(train_entries), features(held_entries), features(test_entries), trunk)
    trunk.attach(model)
    return inputs


def _feature_elements(model: Classifier, trunk: Trunk, img_size: int) -> int:
    probe = torch.zeros((1, 3, img_size, img_size), dtype=torch.uint8)
    return trunk.features(model, probe)[0].numel()
