"""The nine GLUE tasks: their text columns, labels, evaluation splits and metrics.

Headline score per task (the one the sweep ranks runs by, early stopping watches, and the GLUE average uses):
the metric academic-budget-bert's own `run_glue.py` monitors (its `metric_monitor` table):

    cola -> matthews_correlation    sst2, mnli, qnli, rte, wnli -> accuracy
    mrpc, qqp -> f1                 stsb -> spearmanr

MNLI's headline is the matched accuracy; the mismatched one is reported next to it with an `_mm` suffix
(`eval_accuracy_mm`), as in HuggingFace's run_glue. Every task also reports HuggingFace's `combined_score`
(the mean of the task's metrics) when it has more than one metric.

The GLUE average follows the paper (and BERT): WNLI is left out (its dev set is adversarial to
majority-class predictions), so the average runs over the other eight tasks.
"""

from dataclasses import dataclass

HUB_DATASET = "nyu-mll/glue"
# Metrics where a smaller value is better; every other metric is maximised.
LOWER_IS_BETTER = frozenset({"mse"})


@dataclass(frozen=True)
class GlueTask:
    """Everything run_glue.py and the sweep need to know about one GLUE task.

    Args:
        name: lower-case task name, as `load_dataset("nyu-mll/glue", name)` spells it.
        text_columns: the first and (for pair tasks) second text column.
        label_names: class names in label-id order; `None` for the regression task (STS-B).
        metrics: the GLUE metrics reported for the task.
        headline: the metric of `metrics` that ranks runs.
        eval_splits: `(split, metric suffix)` pairs; the first is the validation set used during training.
        test_splits: `(split, file suffix)` pairs of the unlabelled test sets, for `--do_predict`.
    """

    name: str
    text_columns: tuple[str, str | None]
    label_names: tuple[str, ...] | None
    metrics: tuple[str, ...]
    headline: str
    eval_splits: tuple[tuple[str, str], ...] = (("validation", ""),)
    test_splits: tuple[tuple[str, str], ...] = (("test", ""),)

    @property
    def is_regression(self) -> bool:
        """Whether the task predicts a real number (STS-B) instead of a class."""
        return self.label_names is None

    @property
    def num_labels(self) -> int:
        """Size of the classification head: 1 for regression."""
        return 1 if self.label_names is None else len(self.label_names)


_ACCURACY = ("accuracy",)
_ACCURACY_F1 = ("accuracy", "f1")
_ENTAILMENT = ("entailment", "not_entailment")

# Label names and their order are those of the `nyu-mll/glue` ClassLabel features.
GLUE_TASKS: dict[str, GlueTask] = {
    task.name: task
    for task in (
        GlueTask("cola", ("sentence", None), ("unacceptable", "acceptable"), ("matthews_correlation",),
                 "matthews_correlation"),
        GlueTask("sst2", ("sentence", None), ("negative", "positive"), _ACCURACY, "accuracy"),
        GlueTask("mrpc", ("sentence1", "sentence2"), ("not_equivalent", "equivalent"), _ACCURACY_F1, "f1"),
        GlueTask("qqp", ("question1", "question2"), ("not_duplicate", "duplicate"), _ACCURACY_F1, "f1"),
        GlueTask("stsb", ("sentence1", "sentence2"), None, ("pearson", "spearmanr"), "spearmanr"),
        GlueTask(
            "mnli",
            ("premise", "hypothesis"),
            ("entailment", "neutral", "contradiction"),
            _ACCURACY,
            "accuracy",
            eval_splits=(("validation_matched", ""), ("validation_mismatched", "_mm")),
            test_splits=(("test_matched", ""), ("test_mismatched", "_mm")),
        ),
        GlueTask("qnli", ("question", "sentence"), _ENTAILMENT, _ACCURACY, "accuracy"),
        GlueTask("rte", ("sentence1", "sentence2"), _ENTAILMENT, _ACCURACY, "accuracy"),
        GlueTask("wnli", ("sentence1", "sentence2"), ("not_entailment", "entailment"), _ACCURACY, "accuracy"),
    )
}

GLUE_AVERAGE_TASKS: tuple[str, ...] = tuple(name for name in GLUE_TASKS if name != "wnli")


def get_task(name: str) -> GlueTask:
    """Return the task called `name` (any case: `MRPC` == `mrpc`); `ValueError` naming the choices otherwise."""
    task = GLUE_TASKS.get(name.lower())
    if task is None:
        raise ValueError(f"Unknown GLUE task {name!r}: pick one of {', '.join(GLUE_TASKS)}.")
    return task
