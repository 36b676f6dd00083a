"""Methods, chosen by name: the updates `sgm` and `vanilla`, `retrain`, the standard recipe from the pretrained
start, and `warm_start`, the same recipe from the parent's weights (a baseline). A method is its plan (which data,
how drawn, for how long: `plan.py`) and its session (what trains, with which optimizer and loss, and what ships at
the end)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.config import Params
from pipeline.data import ImageSet
from pipeline.methods import sgm_parts
from pipeline.methods.plan import Plan, plan_retrain, plan_update, plan_warm_start
from pipeline.model import INFERENCE_BATCH, Classifier, grow_head, trainable_groups

log = logging.getLogger("pipeline")


@dataclass
class Trainer:
    """What the loop needs from a method: the module to train, its optimizer, loss and hooks."""

    model: nn.Module  # the Classifier, or a peft wrapper around it
    optimizer: torch.optim.Optimizer
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    finish: Callable[[], Classifier]  # the deployable model at session end (adapters merged)
    after_step: Callable[[], None] = lambda: None
    info: dict = field(default_factory=dict)
    average: sgm_parts.WeightAverage | None = None  # evaluated and shipped instead of the last weights


@dataclass(frozen=True)
class Method:
    plan: Callable[..., Plan]  # (params, manifest, parent) -> the session's plan
    prepare: Callable[[Classifier, Plan, ImageSet, Params], Trainer]
    description: str


def freeze_for_training(model: Classifier, params: Params, freeze_all_bn: bool) -> list[str]:
    """Freeze the leading timm groups; keep BatchNorm statistics fixed where they must not drift."""
    trainable = trainable_groups(model, params.model.frozen_groups)
    prefixes = tuple(f"backbone.{name}" for name in trainable)
    for name, param in model.named_parameters():
        param.requires_grad_(name.startswith(prefixes) or name.startswith("head."))
    model.frozen_norms = {name for name, module in model.named_modules()
                          if isinstance(module, nn.modules.batchnorm._BatchNorm)
                          and (freeze_all_bn or not name.startswith(prefixes))}
    return trainable


def adamw(groups: list[dict], weight_decay: float) -> torch.optim.AdamW:
    """AdamW, with decay on weight matrices only (not biases or norm parameters)."""
    split = []
    for group in groups:
        params = [p for p in group.pop("params") if p.requires_grad]
        split.append({**group, "params": [p for p in params if p.ndim > 1], "weight_decay": weight_decay})
        split.append({**group, "params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0})
    return torch.optim.AdamW([g for g in split if g["params"]])


def _embeddings(model: Classifier, data: ImageSet, batch_size: int = INFERENCE_BATCH) -> torch.Tensor:
    """Backbone embeddings, on the model's device."""
    model.eval()
    with torch.no_grad():
        return torch.cat([model.backbone(model.normalize(data.images[i:i + batch_size]))
                          for i in range(0, len(data), batch_size)])


def _grow(model: Classifier, plan: Plan) -> int:
    """The parent's head with a random output unit per new class; returns how many old rows stay fixed (all of
    them when new classes arrive; none in a data-growth session, where the head learns)."""
    new_classes = len(plan.class_names) - plan.n_old
    grow_head(model, new_classes)
    return plan.n_old if new_classes else 0


def prepare_sgm(model: Classifier, plan: Plan, pool: ImageSet, params: Params) -> Trainer:
    sgm, n_old = params.sgm, plan.n_old
    frozen_rows = _grow(model, plan)
    trainable = freeze_for_training(model, params, freeze_all_bn=True)
    info = {"samples_embedded": 0}  # forward passes outside the training steps (counted in train_flops)
    sample = pool.stratified(sgm.init_per_class, params.seed)  # class means need a few hundred, not all
    new, device = sample.targets >= n_old, model.head.weight.device
    if sgm.init == "data_driven" and new.any():
        info["samples_embedded"] += len(sample)
        info.update(sgm_parts.data_driven_init(
            model, _embeddings(model, sample.subset(new)), sample.targets[new].to(device),
            _embeddings(model, sample.subset(~new)), sample.targets[~new].to(device), sgm.init_max_old_drop,
            sgm.init_safety))
    frozen = sgm_parts.FrozenRows(model.head, frozen_rows) if sgm.freeze_old_rows else None
    wrapped: nn.Module = model
    if sgm.lora:
        targets = sgm_parts.lora_targets(model, trainable)
        wrapped = sgm_parts.add_lora(model, targets, sgm.lora_rank, sgm.lora_alpha, sgm.lora_dropout)
        info["lora_modules"] = len(targets)
    model.head.requires_grad_(True)
    adapters = [p for n, p in wrapped.named_parameters() if p.requires_grad and "head." not in n]
    optimizer = adamw([{"params": adapters, "lr": params.update.lr},
                       {"params": list(model.head.parameters()), "lr": sgm.head_lr}], params.update.weight_decay)
    if sgm.soft_targets:
        targets_fn = sgm_parts.DynamicSoftTargets(model.head.out_features, n_old, device)

        def loss(logits, y):
            return sgm_parts.soft_cross_entropy(logits, targets_fn(logits, y))
    else:
        loss = F.cross_entropy
    average = sgm_parts.WeightAverage(wrapped, sgm.ema_decay) if sgm.ema_decay else None

    def after_step():
        if frozen:
            frozen.restore()
        if average:
            average.update()

    def finish():
        if average:
            average.commit()
        return sgm_parts.merge_lora(wrapped) if sgm.lora else model

    return Trainer(model=wrapped, optimizer=optimizer, loss=loss, after_step=after_step, finish=finish, info=info,
                   average=average)


def prepare_vanilla(model: Classifier, plan: Plan, pool: ImageSet, params: Params) -> Trainer:
    """Rehearsal fine-tuning of the same trainable layers at the same rates: random new rows, one-hot
    cross-entropy, no frozen rows, no average."""
    _grow(model, plan)
    freeze_for_training(model, params, freeze_all_bn=True)
    body = [p for n, p in model.named_parameters() if not n.startswith("head.")]
    optimizer = adamw([{"params": body, "lr": params.update.lr},
                       {"params": list(model.head.parameters()), "lr": params.sgm.head_lr}], params.update.weight_decay)
    return Trainer(model=model, optimizer=optimizer, loss=F.cross_entropy, finish=lambda: model)


def prepare_retrain(model: Classifier, plan: Plan, pool: ImageSet, params: Params) -> Trainer:
    """The standard recipe: every layer past the frozen stem trains, BatchNorm statistics included."""
    freeze_for_training(model, params, freeze_all_bn=False)
    optimizer = adamw([{"params": list(model.parameters()), "lr": params.train.lr}], params.train.weight_decay)
    return Trainer(model=model, optimizer=optimizer, loss=F.cross_entropy, finish=lambda: model)


def prepare_warm_start(model: Classifier, plan: Plan, pool: ImageSet, params: Params) -> Trainer:
    """The standard recipe on the parent's weights, a random output unit per new class."""
    _grow(model, plan)
    return prepare_retrain(model, plan, pool, params)


METHODS: dict[str, Method] = {
    "sgm": Method(partial(plan_update, "sgm"), prepare_sgm, "Stability Gap Mitigation + rehearsal"),
    "vanilla": Method(partial(plan_update, "vanilla"), prepare_vanilla, "rehearsal fine-tuning"),
    "retrain": Method(plan_retrain, prepare_retrain, "the standard recipe on all data, from the pretrained start"),
    "warm_start": Method(plan_warm_start, prepare_warm_start, "the standard recipe on all data, from the parent"),
}
RENAMED = {"joint": "retrain"}  # older names, still accepted


def method_name(name: str) -> str:
    """The method's current name; an older one is accepted with a line saying so, an unknown one is an error."""
    if name in RENAMED:
        log.warning("method %r is now called %r", name, RENAMED[name])
        return RENAMED[name]
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; choose one of auto, {', '.join(METHODS)}")
    return name
