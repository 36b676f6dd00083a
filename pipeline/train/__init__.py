"""The one update recipe: load parent -> prepare method -> loop with continual evaluation -> write candidate."""

from pipeline.train.features import FeatureCache, feature_cache
from pipeline.train.recipe import train, update

__all__ = ["FeatureCache", "feature_cache", "train", "update"]
