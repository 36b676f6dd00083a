"""Evaluation: accuracies on old/new classes, continual evaluation curves, gap metrics, negative flips."""

from pipeline.evaluate.continual import ContinualEvaluator, stratified_subset
from pipeline.evaluate.metrics import accuracy_report, gap_metrics, predict

__all__ = ["ContinualEvaluator", "accuracy_report", "gap_metrics", "predict", "stratified_subset"]
