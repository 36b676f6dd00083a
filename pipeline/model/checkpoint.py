"""A model directory: model.safetensors + card.json + README.md (+ metrics.json, curve.csv/png, manifest.json).
No pickle."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from pipeline.config import ModelParams
from pipeline.faults import crash_point
from pipeline.files import atomic_write, clean_leftovers, file_sha256, scratch_prefix
from pipeline.model.classifier import Classifier, build_classifier
from pipeline.model.model_card import write_model_card

WEIGHTS = "model.safetensors"
CARD = "card.json"


class CheckpointError(ValueError):
    """A model directory that cannot be trusted; the message says which file and why."""


def check_free(out: Path) -> None:
    """Model versions are immutable: an existing directory is never written over."""
    if Path(out).exists():
        raise CheckpointError(f"{out} already exists; model versions are immutable, choose a new --out")
    parent = Path(out).absolute().parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        tempfile.NamedTemporaryFile(dir=parent, prefix=".probe.").close()
    except OSError as err:
        raise CheckpointError(f"cannot write under {parent} ({err.strerror or err}); choose another --out") from err


def save_model(out: Path, model: Classifier, card: dict, extra_files: dict[str, str] | None = None) -> Path:
    """Write the directory under a temporary name, then rename: a crash never leaves a half-written model."""
    out = Path(out)
    check_free(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    clean_leftovers(out.parent, out.name)  # a killed earlier write of this model
    staging = Path(tempfile.mkdtemp(prefix=scratch_prefix(out.name), dir=out.parent))
    try:
        state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}  # whatever the device
        save_file(state, staging / WEIGHTS)
        card = {**card, "num_classes": model.head.out_features, "weights_sha256": file_sha256(staging / WEIGHTS)}
        (staging / CARD).write_text(json.dumps(card, indent=2, sort_keys=True))
        for name, text in (extra_files or {}).items():
            (staging / name).write_text(text)
        write_model_card(staging, card)
        for path in staging.iterdir():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
        crash_point("checkpoint:staged")
        os.rename(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out


def load_card(model_dir: Path) -> dict:
    path = Path(model_dir) / CARD
    if not path.is_file():
        raise CheckpointError(f"{path} is missing: {model_dir} is not a model directory")
    try:
        card = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{path}: not valid JSON ({err})") from err
    for key in ("class_names", "model", "weights_sha256", "num_classes"):
        if key not in card:
            raise CheckpointError(f"{path}: missing field {key!r}")
    if len(card["class_names"]) != card["num_classes"]:
        raise CheckpointError(f"{path}: {len(card['class_names'])} class names but {card['num_classes']} outputs")
    return card


def update_card(model_dir: Path, **fields) -> dict:
    """Add fields (e.g. the gate's decision) to a card before registration; replaced atomically."""
    card = {**load_card(model_dir), **fields}
    atomic_write(Path(model_dir) / CARD, json.dumps(card, indent=2, sort_keys=True).encode(), "card:staged")
    write_model_card(model_dir, card)
    return card


def load_model(model_dir: Path, device: torch.device | str = "cpu") -> tuple[Classifier, dict]:
    """Load and verify (SHA-256 from the card, safetensors format, shapes) a model directory, onto `device`."""
    card = load_card(model_dir)
    weights = Path(model_dir) / WEIGHTS
    if not weights.is_file():
        raise CheckpointError(f"{weights} is missing")
    actual = file_sha256(weights)
    if actual != card["weights_sha256"]:
        raise CheckpointError(f"{weights}: SHA-256 {actual[:12]}... differs from the card's "
                              f"{card['weights_sha256'][:12]}...; the file is corrupt or was replaced")
    try:
        state = load_file(weights)
    except (SafetensorError, OSError) as err:
        raise CheckpointError(f"{weights}: not a readable safetensors file ({err})") from err
    model = build_classifier(ModelParams(**card["model"]), card["num_classes"], pretrained=False)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise CheckpointError(f"{weights} does not match its card ({card['model']['backbone']}, "
                              f"{card['num_classes']} classes): {str(err)[:300]}") from err
    return model.to(device), card
