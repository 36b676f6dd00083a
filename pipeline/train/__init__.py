"""The one update recipe: load parent -> prepare method -> loop with continual evaluation -> write candidate."""

from pipeline.train.recipe import train, update

__all__ = ["train", "update"]
