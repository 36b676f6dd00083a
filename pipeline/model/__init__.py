"""Model: timm backbone + growing linear head, pretrained starting points, safetensors checkpoints + cards."""

from pipeline.model.checkpoint import CheckpointError, check_free, load_card, load_model, save_model, update_card
from pipeline.model.classifier import (
    INFERENCE_BATCH,
    Classifier,
    build_classifier,
    check_backbone,
    grow_head,
    trainable_groups,
)

__all__ = [
    "INFERENCE_BATCH", "CheckpointError", "Classifier", "build_classifier", "check_backbone", "check_free",
    "grow_head", "load_card", "load_model", "save_model", "trainable_groups", "update_card",
]
