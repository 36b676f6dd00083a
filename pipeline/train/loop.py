"""The training loop: a schedule of learning rates, the steps, and continual evaluation at the evaluator's
cadence (measurement only: nothing during a session looks at test images to decide)."""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Iterator

import torch
from torch.utils.flop_counter import FlopCounterMode

from pipeline.data import ImageSet
from pipeline.device import autocast
from pipeline.evaluate import ContinualEvaluator
from pipeline.faults import crash_point
from pipeline.methods import Trainer
from pipeline.model import Classifier
from pipeline.progress import Progress
from pipeline.runtime import Runtime
from pipeline.train import distributed

log = logging.getLogger("pipeline")


class Schedule:
    """Linear warm-up over `warmup_share` of the budget, a constant learning rate, then a linear cooldown to zero
    over the last `cooldown_share`: a session's last steps run at a learning rate near zero."""

    def __init__(self, optimizer: torch.optim.Optimizer, budget: int, warmup_share: float, cooldown_share: float):
        self.optimizer = optimizer
        self.base = [group["lr"] for group in optimizer.param_groups]
        self.warmup = max(1, round(warmup_share * budget))
        self.cooldown = max(1, round(cooldown_share * budget))
        self.end = budget

    def factor(self, iteration: int) -> float:
        """Multiplier of the base learning rate for step `iteration` + 1."""
        return max(0.0, min(1.0, (iteration + 1) / self.warmup, (self.end - iteration) / self.cooldown))

    def set(self, iteration: int) -> None:
        for group, base in zip(self.optimizer.param_groups, self.base, strict=True):
            group["lr"] = base * self.factor(iteration)


def step_flops(trainer: Trainer, classifier: Classifier, images: torch.Tensor) -> int:
    """FLOPs of one training step: the forward pass counted by torch's FLOP counter, backward taken as 2x
    forward (torch's counter over-counts depthwise-conv backward about 14x: 168 vs 12 GFLOPs measured)."""
    was_training = trainer.model.training
    trainer.model.eval()  # a train-mode forward would move BatchNorm running statistics towards this one batch
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        trainer.model(classifier.normalize(images))
    trainer.model.train(was_training)
    return 3 * counter.get_total_flops()


def train_loop(trainer: Trainer, classifier: Classifier, pool: ImageSet, batches: Iterator[torch.Tensor],
               schedule: Schedule, evaluator: ContinualEvaluator, runtime: Runtime, precision: str) -> dict:
    """Steps until the schedule ends, on the runtime's device at `precision` (fp32 | bf16 autocast); rank 0
    evaluates the model the session would ship (its weight average, when it keeps one) on the test subset."""
    optimizer = trainer.optimizer
    trainer.model.train()
    model, rank, world = distributed.wrap(trainer.model), distributed.rank(), distributed.world()
    # this rank's slice of every global batch, served by the pool: from memory, a streaming loader or the cache
    steps = pool.batches((index[rank::world] for index in batches), runtime.device, runtime.workers)
    train_s, iteration, lr_at_end, loss = 0.0, 0, 0.0, torch.tensor(math.nan)
    averaged = trainer.average.applied if trainer.average else contextlib.nullcontext

    def evaluate() -> None:
        if rank == 0:
            with averaged():
                row = evaluator(trainer.model, iteration, train_s)
            log.info("iter %4d  loss %.3f  old %s  new %s  all %s", iteration, loss.item(), row["old_acc"],
                     row["new_acc"], row["all_acc"])

    evaluate()
    progress = Progress("training", schedule.end, "steps", log_lines=False)  # evaluations log the milestones
    while iteration < schedule.end:
        start = time.perf_counter()
        schedule.set(iteration)
        lr_at_end = optimizer.param_groups[0]["lr"]
        images, targets = next(steps)
        with autocast(runtime.device, precision):
            loss = trainer.loss(model(classifier.normalize(images)), targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        trainer.after_step()
        iteration += 1
        train_s += time.perf_counter() - start
        progress.advance(total=schedule.end)
        crash_point(f"train:step{iteration}")
        if not torch.isfinite(loss):
            raise FloatingPointError(f"loss became {loss.item()} at iteration {iteration}; lower the learning rate")
        if evaluator.due(iteration) or iteration == schedule.end:
            evaluate()
    progress.close()
    steps.close()  # ends a streaming loader's workers
    return {"iterations": iteration, "train_s": round(train_s, 2), "lr_peak": schedule.base,
            "lr_at_end": lr_at_end}
