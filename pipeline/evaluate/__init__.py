"""Evaluation: accuracies, stability-gap metrics, negative flips, continual evaluation during an update."""

from pipeline.evaluate.continual import ContinualEvaluator
from pipeline.evaluate.metrics import accuracy_report, gap_metrics, negative_flip_rate, predict

__all__ = ["ContinualEvaluator", "accuracy_report", "gap_metrics", "negative_flip_rate", "predict"]
