"""Predictions and explanations for raw clips from a trained run (`emofuse predict`, `emofuse explain`)."""

from emofuse.inference.explain import explain, word_contributions
from emofuse.inference.predict import FeatureLayout, Predictor, RunMismatch, feature_layout, sentiment_labels

__all__ = ["FeatureLayout", "Predictor", "RunMismatch", "explain", "feature_layout", "sentiment_labels",
           "word_contributions"]
