"""The one update recipe: load parent -> prepare method -> loop with continual evaluation -> write candidate."""

from pipeline.train.features import FeatureCache, feature_cache
from pipeline.train.inputs import Engine, engine
from pipeline.train.recipe import train, update

__all__ = ["Engine", "FeatureCache", "engine", "feature_cache", "train", "update"]
