"""Evaluation: accuracies, stability-gap metrics, negative flips, continual evaluation during an update."""

from pipeline.evaluate.continual import ContinualEvaluator
from pipeline.evaluate.metrics import accuracy_report, gap_metrics, logits_of, negative_flip_rate, predict
from pipeline.evaluate.predictions import PredictionCache, predict_cached

__all__ = ["ContinualEvaluator", "PredictionCache", "accuracy_report", "gap_metrics", "logits_of", "negative_flip_rate",
           "predict", "predict_cached"]
