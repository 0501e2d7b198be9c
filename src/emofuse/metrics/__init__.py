"""Evaluation metrics: MMSA-compatible sentiment regression and categorical emotion."""

from emofuse.metrics.classification import classification_metrics
from emofuse.metrics.regression import (
    acc2_has0,
    acc2_non0,
    acc3,
    acc5,
    acc7,
    binary_prf_non0,
    mae,
    multiclass_acc,
    pearson_corr,
    regression_metrics,
)

__all__ = [
    "acc2_has0",
    "acc2_non0",
    "acc3",
    "acc5",
    "acc7",
    "binary_prf_non0",
    "classification_metrics",
    "mae",
    "multiclass_acc",
    "pearson_corr",
    "regression_metrics",
]
