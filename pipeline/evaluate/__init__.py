"""Evaluation: accuracies on old/new classes, continual evaluation curves, gap metrics, negative flips."""

from pipeline.evaluate.continual import ContinualEvaluator
from pipeline.evaluate.metrics import accuracy_report, gap_metrics, predict

__all__ = ["ContinualEvaluator", "accuracy_report", "gap_metrics", "predict"]
