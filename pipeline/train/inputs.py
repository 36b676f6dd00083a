"""What a session reads, behind one interface: the training pool and the test split as `ImageSet`s whose rows
are decoded images in memory, image files decoded as batches are asked for (when the run's images would pass
the memory budget), or cached frozen-trunk features (with the trunk attached to the model). The session asks them
for batches and predictions and never needs to know which stands behind."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from pipeline.config import Params
from pipeline.data import ImageSet, Manifest
from pipeline.model import Classifier, trainable_groups
from pipeline.model.feature_cache import FeatureCache
from pipeline.model.trunk import Trunk
from pipeline.runtime import Runtime, decoded_bytes, load_split

log = logging.getLogger("pipeline")
FEATURE_BYTES = 4  # float32 cached features


@dataclass
class Inputs:
    pool: ImageSet  # the training images (or their features)
    test: ImageSet  # the whole test split, the same kind of rows
    trunk: Trunk | None  # attached to the model while the rows are features

    def for_model(self, other: Classifier, params: Params, runtime: Runtime, data_root: Path,
                  manifest: Manifest) -> ImageSet:
        """The test split as `other` (e.g. the parent beside a retrain) can take it: the same cached features
        when it has the same frozen trunk, else the images."""
        if self.trunk is None:
            return self.test
        if self.trunk == _trunk_of(other, params, runtime.features):
            self.trunk.attach(other)  # no method trains the trunk: the cached features serve both
            return self.test
        return load_split(data_root, manifest.entries("test"), self.test.class_names, params.model.img_size,
                          runtime)

    def release(self, model: Classifier) -> None:
        """The model takes images again (before it is saved)."""
        if self.trunk:
            self.trunk.detach(model)


def _trunk_of(model: Classifier, params: Params, features: FeatureCache | None) -> Trunk | None:
    if features is None:
        return None
    trunk = Trunk.split(model, trainable_groups(model, params.model.frozen_groups), params.model.img_size)
    if trunk is None:
        log.info("feature cache off: %s has no frozen trunk to cache at model.frozen_groups=%d",
                 params.model.backbone, params.model.frozen_groups)
    return trunk


def open_inputs(model: Classifier, params: Params, runtime: Runtime, data_root: Path, manifest: Manifest,
                class_names: list[str], train_entries: list[tuple[str, str]]) -> Inputs:
    """Cached trunk features when the cache is on and they fit the memory budget (computed only for images the
    cache has not seen; the trunk then attached to `model`), else images: decoded now when they fit the budget,
    streamed from their files when not. Each image is held once: the training pool and the test split are
    loaded apart."""
    test_entries, size, budget = manifest.entries("test"), params.model.img_size, runtime.memory_budget()
    rows = len(train_entries) + len(test_entries)
    trunk = _trunk_of(model, params, runtime.features)
    if trunk is not None:
        feature_bytes = rows * FEATURE_BYTES * _feature_elements(model, trunk, size)
        if feature_bytes > budget:
            log.info("feature cache skipped: the features of %d images (%d MB) exceed the memory budget (%d MB)",
                     rows, feature_bytes >> 20, budget >> 20)
            trunk = None
    if trunk is None:
        stream = decoded_bytes(rows, size) > budget
        if stream:
            log.info("streaming %d images from %s: decoded they would take %d MB, over the memory budget (%d MB, "
                     "PIPELINE_MEMORY_BUDGET_MB)", rows, data_root, decoded_bytes(rows, size) >> 20, budget >> 20)
        return Inputs(*(ImageSet.load(data_root, entries, class_names, size, stream)
                        for entries in (train_entries, test_entries)), None)

    def features(entries: list[tuple[str, str]]) -> ImageSet:
        hashed = [(p, c, manifest.files[p.partition("/")[0]][p][1]) for p, c in entries]  # "<split>/<class>/<f>"
        return runtime.features.load(model, trunk, data_root, hashed, class_names, size)

    inputs = Inputs(features(train_entries), features(test_entries), trunk)
    trunk.attach(model)
    return inputs


def _feature_elements(model: Classifier, trunk: Trunk, img_size: int) -> int:
    probe = torch.zeros((1, 3, img_size, img_size), dtype=torch.uint8)
    return trunk.features(model, probe)[0].numel()
