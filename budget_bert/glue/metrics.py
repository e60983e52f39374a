"""GLUE metrics computed offline with scikit-learn and SciPy.

These are the functions HuggingFace's `glue` metric wraps (`evaluate.load("glue", task)` fetches that
wrapper's code from the Hub, which an offline machine cannot do), with the same keys and values:
accuracy, binary F1 (positive class 1), Matthews correlation, Pearson and Spearman correlation.
Local data sets without a GLUE task get accuracy, F1 and Matthews correlation for two classes (as MRPC, QQP and
CoLA report them), accuracy for more (HuggingFace run_glue's default), and mean squared error for regression.
"""

from collections.abc import Callable

import numpy as np
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import f1_score, matthews_corrcoef
from transformers import EvalPrediction

from budget_bert.glue.glue_data import LabelSpec
from budget_bert.glue.tasks import GlueTask


def _accuracy(predictions: np.ndarray, references: np.ndarray) -> float:
    return float((predictions == references).mean())


def _f1(predictions: np.ndarray, references: np.ndarray) -> float:
    return float(f1_score(references, predictions))


def _matthews_correlation(predictions: np.ndarray, references: np.ndarray) -> float:
    return float(matthews_corrcoef(references, predictions))


def _pearson(predictions: np.ndarray, references: np.ndarray) -> float:
    return float(pearsonr(predictions, references)[0])


def _spearmanr(predictions: np.ndarray, references: np.ndarray) -> float:
    return float(spearmanr(predictions, references)[0])


def _mse(predictions: np.ndarray, references: np.ndarray) -> float:
    return float(((predictions - references) ** 2).mean())


METRICS: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "accuracy": _accuracy,
    "f1": _f1,
    "matthews_correlation": _matthews_correlation,
    "pearson": _pearson,
    "spearmanr": _spearmanr,
    "mse": _mse,
}


_BINARY_METRICS = ("accuracy", "f1", "matthews_correlation")


def metric_names(task: GlueTask | None, labels: LabelSpec) -> tuple[str, ...]:
    """The metrics reported for `task`, or for data without a GLUE task, those its labels call for."""
    if task is not None:
        return task.metrics
    if labels.is_regression:
        return ("mse",)
    return _BINARY_METRICS if labels.num_labels == 2 else ("accuracy",)


def headline_metric(task: GlueTask | None, labels: LabelSpec, metric_for_best_model: str | None = None) -> str:
    """The metric that selects the best model and drives early stopping: `--metric_for_best_model` (as in
    HuggingFace, with or without its `eval_` prefix) when given, else the task's headline (`budget_bert.glue.tasks`)
    or the first metric of the data's.

    Raises:
        ValueError: `--metric_for_best_model` names no metric this run reports (the choices are listed).
    """
    names = metric_names(task, labels)
    if metric_for_best_model is None:
        return task.headline if task is not None else names[0]
    chosen = metric_for_best_model.removeprefix("eval_")
    choices = (*names, *(("combined_score",) if len(names) > 1 else ()), "loss")
    if chosen not in choices:
        raise ValueError(
            f"--metric_for_best_model {metric_for_best_model}: this run reports no such metric; pick one of "
            f"{', '.join(choices)}"
        )
    return chosen


def compute_scores(names: tuple[str, ...], predictions, references) -> dict[str, float]:
    """Compute the metrics `names` on label predictions (class ids, or real numbers for regression).

    Adds `combined_score`, the mean of the metrics, when there is more than one (HuggingFace run_glue).
    """
    predictions, references = np.asarray(predictions), np.asarray(references)
    scores = {name: METRICS[name](predictions, references) for name in names}
    if len(scores) > 1:
        scores["combined_score"] = float(np.mean(list(scores.values())))
    return scores


def glue_metrics(task: GlueTask, predictions, references) -> dict[str, float]:
    """The GLUE metrics of `task` (same keys and values as HuggingFace's `glue` metric, plus `combined_score`)."""
    return compute_scores(task.metrics, predictions, references)


def build_compute_metrics(names: tuple[str, ...], is_regression: bool) -> Callable[[EvalPrediction], dict]:
    """A `Trainer` `compute_metrics` function: logits to predictions (argmax, or the single regression output)."""

    def compute_metrics(prediction: EvalPrediction) -> dict[str, float]:
        logits = prediction.predictions[0] if isinstance(prediction.predictions, tuple) else prediction.predictions
        predictions = np.squeeze(logits, axis=-1) if is_regression else np.argmax(logits, axis=-1)
        return compute_scores(names, predictions, prediction.label_ids)

    return compute_metrics
