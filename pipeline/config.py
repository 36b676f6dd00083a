"""One source of truth for settings: ML hyperparameters from params.yaml, infrastructure from the environment."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

log = logging.getLogger("pipeline")
Precision = Literal["auto", "fp32", "bf16"]
LOADER_WORKERS = min(8, os.cpu_count() or 1)  # default DataLoader processes decoding streamed batches


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


# Older params files keep working (docs/decisions.md): a renamed key is read under its new name; a switch removed
# after measurement is dropped at the value every session now runs as, and refused at another.
RENAMED = {"update": {"epochs": "new_data_passes"}, "sgm": {}}
RETIRED = {"update": {"stop_patience": None, "stop_min_gain": 1.0, "val_per_class": 0, "norm_stats": False,
                      "growth_lr_scale": 1.0},
           "sgm": {"head_refit": False, "refit_per_class": 1000, "refit_penalty": 1e-2, "logit_adjust": False}}
EXTENDS = "extends"  # a preset's key: the params file it is read on top of (relative to the preset)


def _check_shares(raw: dict, path: Path) -> dict:
    """Before 12-05 `update.new_share` had two meanings: the share of each batch the new classes take and, inside a
    known class, its new files' share of its draws; the first is `update.new_class_share` since. A file that sets
    new_share without new_class_share could mean either, so it is refused, naming what to write, never read with one
    meaning silently; so is `update.growth_share`, the second meaning's earlier name."""
    update = raw.get("update") if isinstance(raw.get("update"), dict) else {}
    if "growth_share" in update:
        raise ConfigError(f"{path}: update.growth_share is now update.new_share (a known class's new files' share of "
                          "its draws), and the share of each batch the new classes take between them is "
                          "update.new_class_share (default 0.15): rename the one and set the other")
    if "new_share" in update and "new_class_share" not in update:
        raise ConfigError(f"{path}: update.new_share={update['new_share']} without update.new_class_share: before "
                          "12-05 update.new_share also set the share of each batch the new classes take; it now sets "
                          "only a known class's new files' share of its draws. Add update.new_class_share (default "
                          f"0.15; {update['new_share']} keeps this file's earlier meaning)")
    return raw


def _retire(raw: object, section: str) -> object:
    if not isinstance(raw, dict):
        return raw
    raw = dict(raw)
    for old, new in RENAMED[section].items():
        if old in raw and new in raw:
            raise ValueError(f"{section}.{old} is now {section}.{new}: set {section}.{new} alone (e.g. --set "
                             f"{section}.{new}={raw[old]})")
        if old in raw:
            log.warning("%s.%s is now %s.%s", section, old, section, new)
            raw[new] = raw.pop(old)
    for key, kept in RETIRED[section].items():
        if key in raw and not _same(raw.pop(key), kept):
            raise ValueError(f"{section}.{key} was removed after measurement (docs/decisions.md); every session "
                             f"now runs as {section}.{key}={kept} did")
    return raw


def _same(value: object, kept: object) -> bool:
    """`value` as written (YAML reads 1e-2 as a string) is `kept`."""
    try:
        return value == kept or (isinstance(kept, float) and float(value) == kept)
    except (TypeError, ValueError):
        return False


class ModelParams(_Section):
    backbone: str = "tf_efficientnet_lite0"
    pretrained: str = "efficientnet-lite0"
    img_size: int = Field(64, ge=16, le=1024)
    frozen_groups: int = Field(4, ge=0)


class TrainParams(_Section):
    epochs: float = Field(3.0, gt=0)
    batch_size: int = Field(64, ge=2)
    lr: float = Field(1.5e-3, gt=0)
    weight_decay: float = Field(0.05, ge=0)
    warmup_share: float = Field(0.1, gt=0, lt=1)
    cooldown_share: float = Field(0.9, gt=0, le=1)  # linear decay to zero over this share of the iterations
    precision: Precision = "auto"  # auto: bf16 autocast on CUDA, fp32 on the CPU


class UpdateParams(_Section):
    method: str = "auto"  # auto | sgm | vanilla | retrain
    batch_size: int = Field(64, ge=2)
    new_class_share: float = Field(0.15, gt=0, lt=1)  # the classes new since the parent: of each batch
    new_share: float = Field(0.5, gt=0, lt=1)  # a known class that got new files: of its own draws
    rehearsal_per_class: int | None = Field(None, ge=0)  # None: all old data; 0: new data alone (forgets)
    lr: float = Field(1.5e-4, gt=0)  # the trained layers; a tenth of the retrain's: they start converged
    weight_decay: float = Field(0.05, ge=0)
    warmup_share: float = Field(0.1, gt=0, lt=1)
    cooldown_share: float = Field(0.3, gt=0, le=1)  # linear decay to zero over the last share of the budget
    new_data_passes: float = Field(2.0, gt=0)  # budget: passes over the new samples, at the share of a batch they get
    max_iters: int = Field(1500, ge=1)
    min_iters: int = Field(0, ge=0)  # 0: no floor (a floor of 30 was measured and removed)
    precision: Precision = "auto"

    @model_validator(mode="before")
    @classmethod
    def _renamed(cls, raw: dict) -> dict:
        return _retire(raw, "update")


class SGMParams(_Section):
    init: Literal["data_driven", "random"] = "data_driven"
    init_max_old_drop: float = Field(1.0, ge=0, le=100)
    init_safety: float = Field(0.5, gt=0, le=1)
    init_per_class: int = Field(200, ge=1)
    soft_targets: bool = False  # measured: old samples' soft targets cost the hardest classes (docs/decisions.md)
    lora: bool = False  # measured: rank-48 LoRA cost 2-3 points of final accuracy (docs/decisions.md)
    lora_rank: int = Field(48, ge=1)
    lora_alpha: float = Field(48.0, gt=0)
    lora_dropout: float = Field(0.0, ge=0, lt=1)
    ema_decay: float | None = Field(0.95, gt=0, lt=1)  # evaluate and ship an average of the weights (None: off)
    head_lr: float = Field(1.5e-3, gt=0)
    freeze_old_rows: bool = True

    @model_validator(mode="before")
    @classmethod
    def _renamed(cls, raw: dict) -> dict:
        return _retire(raw, "sgm")


class EvalParams(_Section):
    per_class: int = Field(50, ge=1)
    every: int = Field(25, ge=1)
    dense_every: int = Field(3, ge=1)
    dense_until: int = Field(30, ge=0)


class GateParams(_Section):
    """Promotion rules: candidate vs champion on the test split."""

    # non-inferiority on the champion's classes (paired per image, the candidate predicting among them): the
    # one-sided upper confidence bound on the old-class accuracy drop, in points, at most the margin
    old_acc_margin: float = Field(2.0, gt=0, le=100)
    old_acc_margin_all: float = Field(8.0, gt=0, le=100)  # class-incremental, every output: bound on the drop
    confidence: float = Field(0.95, ge=0.5, lt=1)  # one-sided level of the bounds
    min_class_acc: float = Field(50.0, ge=0, le=100)  # floor for every class, old and new
    class_floors: dict[str, float] = {}  # per-class overrides of min_class_acc
    max_negative_flip_rate: float = Field(10.0, ge=0, le=100)
    min_new_acc: float = Field(60.0, ge=0, le=100)


class Params(_Section):
    seed: int = 0
    model: ModelParams = ModelParams()
    train: TrainParams = TrainParams()
    update: UpdateParams = UpdateParams()
    sgm: SGMParams = SGMParams()
    eval: EvalParams = EvalParams()
    gate: GateParams = GateParams()

    def digest(self) -> str:
        """Hash of the hyperparameters, recorded in every model card."""
        return hashlib.sha256(json.dumps(self.model_dump(), sort_keys=True).encode()).hexdigest()[:16]


class Settings(BaseSettings):
    """Infrastructure, from PIPELINE_* environment variables or a .env file."""

    model_config = SettingsConfigDict(env_prefix="PIPELINE_", env_file=".env", extra="ignore")

    params_file: Path = Path("params.yaml")
    cache_dir: Path = Path.home() / ".cache" / "pipeline"
    fashion_mnist_dir: Path = Path("/usr/share/datasets/fashion-mnist")
    registry_dir: Path = Path("models")
    s3_bucket: str | None = None  # set to keep the registry in S3 (credentials: AWS_* variables, boto3's chain)
    s3_prefix: str = Field("registry", pattern=r"^[A-Za-z0-9._/-]*$")
    work_dir: Path = Path("work")  # candidates and reports before registration
    min_free_mb: int = Field(256, ge=0)  # the registry folder must have this much room before an update starts
    feature_cache_mb: int = Field(8192, ge=0)  # frozen-trunk features under cache_dir/features; 0 turns it off
    hash_cache: bool = True  # files' hashes remembered by stat under cache_dir (pipeline/data/hashes.py); false: rehash
    # The runtime: auto | cpu | cuda | cuda:N (auto: CUDA when present); a run's decoded images (or cached
    # features) beyond memory_budget_mb stream from disk through loader_workers processes (unset: half the RAM
    # available when the run starts).
    device: str = "auto"
    memory_budget_mb: int | None = Field(None, ge=1)
    loader_workers: int = Field(LOADER_WORKERS, ge=0)
    # Notifications of the served deployment (flows.deploy): a Prefect notification block, "<type slug>/<name>",
    # e.g. "slack-webhook/ml-alerts" or "custom-webhook/ops"; and after how many days without a completed run.
    notify_block: str | None = None
    notify_stale_days: float = Field(7, gt=0)
    # The registry's lock: how long a writer waits for it; on S3, after how long a lock left by a killed run
    # is taken over; and how many times each S3 request is tried (backoff with jitter between tries).
    lock_timeout_s: float = Field(600, gt=0)
    s3_lock_ttl_s: float = Field(3600, gt=0)
    s3_max_attempts: int = Field(5, ge=1)


class ConfigError(ValueError):
    """A setting the user must fix; the message says which and how."""


def load_settings() -> Settings:
    """Settings from the environment / .env, with a bad value reported by its variable name."""
    try:
        return Settings()
    except ValidationError as err:
        problems = "; ".join(f"PIPELINE_{'_'.join(map(str, e['loc'])).upper()}: {e['msg']}" for e in err.errors())
        raise ConfigError(f"invalid environment settings: {problems}") from err


def parse_overrides(pairs: list[str]) -> dict:
    """Turn ["update.lr=0.01", ...] into a nested dict; values are parsed as YAML scalars."""
    nested: dict = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {pair!r}: expected section.key=value, e.g. --set update.lr=0.001")
        *sections, leaf = key.split(".")
        node = nested
        for section in sections:
            node = node.setdefault(section, {})
        node[leaf] = yaml.safe_load(raw)
    return nested


def _merge(base: dict, extra: dict) -> dict:
    merged = dict(base)
    for key, value in extra.items():
        merged[key] = _merge(merged[key], value) if isinstance(merged.get(key), dict) else value
    return merged


def _read(path: Path, seen: tuple[Path, ...] = ()) -> dict:
    """A params file's mapping; a preset (`extends: params.yaml`) is its base file with the preset's keys on top."""
    if path.resolve() in seen:
        raise ConfigError(f"{path}: `{EXTENDS}` makes a cycle ({' -> '.join(map(str, [*seen, path.resolve()]))})")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({err})") from err
    except OSError as err:
        raise ConfigError(f"{path}: cannot read it ({err.strerror})") from err
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of sections, got {type(raw).__name__}")
    if EXTENDS in raw:
        base = path.parent / str(raw.pop(EXTENDS))
        raw = _merge(_read(base, (*seen, path.resolve())), raw)
    return _check_shares(raw, path)


def load_params(path: Path | None = None, overrides: list[str] = ()) -> Params:
    """params.yaml (when present) plus --set overrides, validated; a bad value names the key."""
    raw = _read(path) if path is not None and path.exists() else {}
    try:
        return Params.model_validate(_merge(raw, parse_overrides(list(overrides))))
    except ValidationError as err:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors())
        raise ConfigError(f"invalid parameters ({path or 'defaults'} + --set): {problems}") from err
