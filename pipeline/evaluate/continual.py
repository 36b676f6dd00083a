"""Continual evaluation: accuracy on fixed old/new-class subsets at chosen iterations, written as a curve."""

from __future__ import annotations

import csv
import io
import time

from pipeline.config import EvalParams
from pipeline.data import ImageSet
from pipeline.evaluate.metrics import accuracy_report, predict


class ContinualEvaluator:
    """Evaluates at iteration 0, densely early (the dip comes early), then every `every` iterations."""

    def __init__(self, test: ImageSet, n_old: int, params: EvalParams, seed: int):
        self.subset = test.stratified(params.per_class, seed).decoded()  # fixed for the whole update
        self.n_old = n_old
        self.params = params
        self.rows: list[dict] = []
        self.seconds = 0.0

    def due(self, iteration: int) -> bool:
        every = self.params.dense_every if iteration <= self.params.dense_until else self.params.every
        return iteration % every == 0

    def __call__(self, model, iteration: int, train_seconds: float) -> dict:
        start = time.perf_counter()
        report = accuracy_report(predict(model, self.subset), self.subset.targets,
                                 self.subset.class_names, self.n_old)
        row = {"iteration": iteration, "old_acc": report["old_acc"], "new_acc": report["new_acc"],
               "all_acc": report["all_acc"], "train_s": round(train_seconds, 3)}
        self.rows.append(row)
        self.seconds += time.perf_counter() - start
        return row

    def csv(self) -> str:
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=["iteration", "old_acc", "new_acc", "all_acc", "train_s"])
        writer.writeheader()
        writer.writerows(self.rows)
        return out.getvalue()
