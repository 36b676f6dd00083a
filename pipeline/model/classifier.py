"""A timm backbone (`num_classes=0`) with a linear head that grows as classes arrive."""

from __future__ import annotations

import timm
import torch
from timm.models import group_modules
from torch import nn

from pipeline.config import ModelParams
from pipeline.model.pretrained import load_pretrained

INFERENCE_BATCH = 256  # images per forward pass wherever the engine only predicts (evaluation, embeddings, trunk)


class Classifier(nn.Module):
    def __init__(self, backbone: nn.Module, num_classes: int, mean: tuple, std: tuple):
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(backbone.num_features, num_classes)
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)
        self.frozen_norms: set[str] = set()  # norm layers kept in eval mode while training
        self.takes_features = False  # True while a Trunk is attached: inputs are cached trunk features

    def train(self, mode: bool = True) -> Classifier:
        super().train(mode)
        for name, module in self.named_modules():
            if mode and name in self.frozen_norms:
                module.eval()
        return self

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 [N, 3, H, W] -> the float input the backbone was trained on (trunk features pass through), on the
        model's device: images travel as uint8 (a quarter of the bytes) and become floats there."""
        images = images.to(self.mean.device, non_blocking=True)
        if self.takes_features:
            return images.contiguous(memory_format=torch.channels_last) if images.ndim == 4 else images
        x = (images.float() / 255.0 - self.mean) / self.std
        return x.contiguous(memory_format=torch.channels_last)  # ~1.3x faster convs on CPU

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))

    def probabilities(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 images [N, 3, H, W] -> class probabilities [N, classes] (what predict and the export serve)."""
        return self(self.normalize(images)).float().softmax(1)


def check_backbone(name: str) -> None:
    if not timm.is_model(name):
        raise ValueError(f"unknown backbone {name!r} (model.backbone in params.yaml); see timm.list_models()")


def build_classifier(params: ModelParams, num_classes: int, pretrained: bool = True) -> Classifier:
    """Fresh model; `pretrained=False` skips the weights (a checkpoint will overwrite them)."""
    check_backbone(params.backbone)
    backbone = timm.create_model(params.backbone, pretrained=False, num_classes=0)
    if pretrained:
        load_pretrained(backbone, params.backbone, params.pretrained)
    cfg = backbone.pretrained_cfg
    model = Classifier(backbone, num_classes, cfg.get("mean", (0.5,) * 3), cfg.get("std", (0.5,) * 3))
    return model.to(memory_format=torch.channels_last)


def trainable_groups(model: Classifier, frozen_groups: int) -> list[str]:
    """Names of backbone modules past the first `frozen_groups` timm parameter groups (stem, then stages)."""
    groups = group_modules(model.backbone, model.backbone.group_matcher(coarse=True))
    return [name for gid in sorted(groups) if gid >= frozen_groups for name in groups[gid]]


@torch.no_grad()
def grow_head(model: Classifier, new_rows: int, optimizer: torch.optim.Optimizer | None = None) -> None:
    """Append `new_rows` output units; existing rows, and their optimizer state, are kept as they are."""
    old = model.head
    grown = nn.Linear(old.in_features, old.out_features + new_rows).to(old.weight.device)
    grown.weight[: old.out_features] = old.weight
    grown.bias[: old.out_features] = old.bias
    grown.weight.requires_grad_(old.weight.requires_grad)
    grown.bias.requires_grad_(old.bias.requires_grad)
    model.head = grown
    if optimizer is None:
        return
    for group in optimizer.param_groups:
        for i, param in enumerate(group["params"]):
            replacement = {id(old.weight): grown.weight, id(old.bias): grown.bias}.get(id(param))
            if replacement is None:
                continue
            group["params"][i] = replacement
            state = optimizer.state.pop(param, {})
            for key, value in state.items():
                if torch.is_tensor(value) and value.shape == param.shape:
                    pad = torch.zeros((new_rows, *value.shape[1:]), dtype=value.dtype, device=value.device)
                    state[key] = torch.cat([value, pad])
            optimizer.state[replacement] = state
