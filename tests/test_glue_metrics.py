"""GLUE metrics against values computed by hand, and the task table they are chosen from."""

import math

import numpy as np
import pytest
from transformers import EvalPrediction

from budget_bert.glue.glue_data import LabelSpec
from budget_bert.glue.metrics import build_compute_metrics, compute_scores, glue_metrics, headline_metric, metric_names
from budget_bert.glue.tasks import GLUE_AVERAGE_TASKS, GLUE_TASKS, get_task

# Binary predictions vs references: TP=3 (0, 3, 5), FP=1 (2), FN=1 (4), TN=1 (1).
PREDICTIONS = [1, 0, 1, 1, 0, 1]
REFERENCES = [1, 0, 0, 1, 1, 1]
ACCURACY = 4 / 6
F1 = 2 * (3 / 4) * (3 / 4) / (3 / 4 + 3 / 4)  # precision = recall = 3/4
MCC = (3 * 1 - 1 * 1) / math.sqrt((3 + 1) * (3 + 1) * (1 + 1) * (1 + 1))  # = 0.25

# Regression: x = 1..4, y = 2, 5, 4, 9. Deviations from the means (2.5, 5): x -1.5 -0.5 0.5 1.5, y -3 0 -1 4.
SCORES = [1.0, 2.0, 3.0, 4.0]
TARGETS = [2.0, 5.0, 4.0, 9.0]
PEARSON = 10 / math.sqrt(5 * 26)  # sum of products 10, sums of squares 5 and 26
SPEARMAN = 1 - 6 * 2 / (4 * (4**2 - 1))  # ranks of y: 1 3 2 4, squared rank differences sum to 2
MSE = (1 + 9 + 1 + 25) / 4

BINARY = LabelSpec(False, ("0", "1"), {0: 0, 1: 1})
THREE_CLASSES = LabelSpec(False, ("a", "b", "c"), {"a": 0, "b": 1, "c": 2})
REGRESSION = LabelSpec(True, None, None)


def test_classification_metrics_match_hand_computed_values():
    assert glue_metrics(get_task("mrpc"), PREDICTIONS, REFERENCES) == pytest.approx(
        {"accuracy": ACCURACY, "f1": F1, "combined_score": (ACCURACY + F1) / 2}
    )
    assert glue_metrics(get_task("cola"), PREDICTIONS, REFERENCES) == pytest.approx({"matthews_correlation": MCC})
    assert glue_metrics(get_task("rte"), PREDICTIONS, REFERENCES) == pytest.approx({"accuracy": ACCURACY})


def test_regression_metrics_match_hand_computed_values():
    assert glue_metrics(get_task("stsb"), SCORES, TARGETS) == pytest.approx(
        {"pearson": PEARSON, "spearmanr": SPEARMAN, "combined_score": (PEARSON + SPEARMAN) / 2}
    )
    assert compute_scores(("mse",), SCORES, TARGETS) == pytest.approx({"mse": MSE})


def test_compute_metrics_takes_the_argmax_of_logits_or_the_regression_output():
    # (B, 2) logits whose argmax is PREDICTIONS
    logits = np.array([[0.1, 0.9], [2.0, -1.0], [0.0, 3.0], [0.2, 0.4], [1.0, 0.0], [-1.0, 1.0]])
    classify = build_compute_metrics(("accuracy", "f1"), is_regression=False)
    assert classify(EvalPrediction(predictions=logits, label_ids=np.array(REFERENCES))) == pytest.approx(
        {"accuracy": ACCURACY, "f1": F1, "combined_score": (ACCURACY + F1) / 2}
    )
    regress = build_compute_metrics(("pearson",), is_regression=True)
    outputs = np.array(SCORES).reshape(-1, 1)  # (B, 1)
    assert regress(EvalPrediction(predictions=outputs, label_ids=np.array(TARGETS))) == pytest.approx(
        {"pearson": PEARSON}
    )


def test_metric_choice_for_tasks_and_local_data():
    assert metric_names(get_task("qqp"), BINARY) == ("accuracy", "f1")
    assert headline_metric(get_task("qqp"), BINARY) == "f1"
    assert headline_metric(get_task("stsb"), REGRESSION) == "spearmanr"
    assert headline_metric(get_task("cola"), BINARY) == "matthews_correlation"
    assert metric_names(None, REGRESSION) == ("mse",)
    assert metric_names(None, BINARY) == ("accuracy", "f1", "matthews_correlation")
    assert metric_names(None, THREE_CLASSES) == ("accuracy",)
    assert headline_metric(None, BINARY, "eval_matthews_correlation") == "matthews_correlation"
    with pytest.raises(ValueError, match="--metric_for_best_model f1: this run reports no such metric; pick one "
                                         "of accuracy, loss"):
        headline_metric(None, THREE_CLASSES, "f1")
    assert all(task.headline in task.metrics for task in GLUE_TASKS.values())


def test_tasks_are_case_insensitive_and_unknown_ones_are_named():
    assert get_task("MRPC") is GLUE_TASKS["mrpc"]
    with pytest.raises(ValueError, match=r"Unknown GLUE task 'sst-3': pick one of cola, sst2, mrpc"):
        get_task("sst-3")
    assert len(GLUE_TASKS) == 9 and "wnli" not in GLUE_AVERAGE_TASKS and len(GLUE_AVERAGE_TASKS) == 8
    assert [suffix for _, suffix in get_task("mnli").eval_splits] == ["", "_mm"]
    assert get_task("stsb").is_regression and get_task("stsb").num_labels == 1 and get_task("mnli").num_labels == 3
