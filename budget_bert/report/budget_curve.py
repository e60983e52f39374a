"""The budget curve of one wsd run: eval loss against the budget each of its models stands for.

The models of a `--curve wsd` run with `--finetune_time_markers` and its cooldowns (`python -m budget_bert.cooldown`):

- the plain marker snapshots (`finetune_snapshots/marker-0.40`), taken at the peak learning rate: what stopping the
  run there gives, at the budget used then;
- the cooled-down models (`cooldown/budget-<B>h/finetune_snapshots/cooldown-budget-<B>h`): what a wsd run with the
  budget `B` gives;
- the end of the run (`finetune_snapshots/end`), at its whole budget;
- optionally, the ends of separate runs of other budgets (same data and flags), to compare the cooled-down models
  with.

Every model is evaluated here on the same masked examples of the run's validation split (the first
`max_examples`, masked once with a fixed seed), so the points compare; the losses are cached in the report folder
(`budget_curve.json`) and a rerun evaluates only the models it has not seen.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from matplotlib.figure import Figure
from transformers import AutoModelForMaskedLM, AutoTokenizer
from transformers.utils import logging

from budget_bert.cooldown.cooldown_runs import cooldown_snapshot_folders
from budget_bert.data.collator import DataCollatorForBertPretraining
from budget_bert.data.loading import load_prepared_dataset
from trainer_callbacks.snapshots import (
    END_SNAPSHOT_NAME,
    RUN_ARGUMENTS_FILE,
    SNAPSHOTS_DIR,
    SnapshotInfo,
    snapshot_folders,
)


logger = logging.get_logger(__name__)

CACHE_FILE = "budget_curve.json"
PLOT_FILE = "budget_curve.png"
KINDS = {
    "marker": "marker snapshot",
    "cooldown": "cooled down",
    "end": "end of the run",
    "separate": "separate run",
}


@dataclass
class BudgetPoint:
    """One model of the budget curve: its kind (one of `KINDS`), its snapshot folder and step, the budget it stands
    for, and its eval loss on the report's validation examples (`None` until evaluated)."""

    kind: str
    snapshot_dir: str
    global_step: int
    budget_seconds: float
    eval_loss: float | None = None

    @property
    def key(self) -> str:
        """What the cache knows the point by: its folder and step (a snapshot taken again is evaluated again)."""
        return f"{self.snapshot_dir}@{self.global_step}"

    @property
    def perplexity(self) -> float | None:
        """`exp(eval_loss)`."""
        return None if self.eval_loss is None else math.exp(min(self.eval_loss, 700.0))


def budget_points(output_dir: str | Path, separate_runs=()) -> list[BudgetPoint]:
    """
    The models of the budget curve of the run in `output_dir` and the end snapshots of the `separate_runs` (output
    folders), by kind then budget (not evaluated yet).
    """
    points = []
    for run in separate_runs:
        folder = Path(run) / SNAPSHOTS_DIR / END_SNAPSHOT_NAME
        info = SnapshotInfo.load(folder)
        if info is None:
            raise ValueError(f"{run} has no finished run_mlm.py run ({folder} is missing)")
        points.append(BudgetPoint("separate", str(folder), info.global_step, info.elapsed_seconds))
    for folder in snapshot_folders(output_dir):
        info = SnapshotInfo.load(folder)
        if info is not None:
            kind = "end" if info.marker is None else "marker"
            points.append(BudgetPoint(kind, str(folder), info.global_step, info.elapsed_seconds))
    for folder in cooldown_snapshot_folders(output_dir):
        info = SnapshotInfo.load(folder)
        if info is not None:
            points.append(BudgetPoint("cooldown", str(folder), info.global_step, info.budget_seconds))
    return sorted(points, key=lambda point: (list(KINDS).index(point.kind), point.budget_seconds))


def validation_batches(snapshot_dir: str | Path, max_examples: int, batch_size: int = 32, seed: int = 0) -> list[dict]:
    """
    The first `max_examples` of the validation split of the data a snapshot was trained on (its recorded
    `--dataset_path`), masked as in training but with a fixed seed, in batches: the same for every model.

    Raises:
        ValueError: the run was not trained on prepared data, or its data has no validation split.
    """
    arguments = json.loads((Path(snapshot_dir) / RUN_ARGUMENTS_FILE).read_text())
    data = arguments.get("DataArguments", {})
    if not data.get("dataset_path"):
        raise ValueError("the budget curve evaluates on the run's --dataset_path validation split; this run had none")
    _, validation, _ = load_prepared_dataset(data["dataset_path"])
    if validation is None:
        raise ValueError(
            f"--dataset_path {data['dataset_path']} has no validation split to evaluate the budget curve on"
        )
    collator = DataCollatorForBertPretraining(
        tokenizer=AutoTokenizer.from_pretrained(snapshot_dir),
        mlm_probability=data.get("mlm_probability", 0.15),
        max_predictions_per_seq=data.get("max_predictions_per_seq"),
        seed=seed,
    )
    examples = [validation[i] for i in range(min(max_examples, len(validation)))]
    return [collator(examples[start : start + batch_size]) for start in range(0, len(examples), batch_size)]


@torch.no_grad()
def masked_lm_loss(snapshot_dir: str | Path, batches: list[dict]) -> float:
    """The MLM loss of the model in `snapshot_dir` over `batches`, averaged over every masked token."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = AutoModelForMaskedLM.from_pretrained(snapshot_dir).to(device).eval()
    total, tokens = 0.0, 0
    for batch in batches:
        masked = int((batch["labels"] != -100).sum())
        loss = model(**{key: value.to(device) for key, value in batch.items()}).loss
        total, tokens = total + loss.item() * masked, tokens + masked
    return total / tokens


def evaluate_points(points: list[BudgetPoint], cache_file: Path, max_examples: int = 512) -> None:
    """Fill in each point's eval loss, from `cache_file` when it holds one for that folder, else by evaluating."""
    cached = json.loads(cache_file.read_text()) if cache_file.is_file() else {}
    if cached.get("max_examples") != max_examples:
        cached = {"max_examples": max_examples, "eval_loss": {}}
    missing = [point for point in points if point.key not in cached["eval_loss"]]
    if missing:
        batches = validation_batches(missing[0].snapshot_dir, max_examples)
        for point in missing:
            cached["eval_loss"][point.key] = masked_lm_loss(point.snapshot_dir, batches)
            logger.info(f"Budget curve: {point.snapshot_dir} has eval loss {cached['eval_loss'][point.key]:.4f}")
        cache_file.write_text(json.dumps(cached, indent=2) + "\n")
    for point in points:
        point.eval_loss = cached["eval_loss"][point.key]


def budget_curve_figure(points: list[BudgetPoint], title: str) -> Figure:
    """Eval loss and perplexity against the budget each model stands for, one series per kind."""
    hours = max(point.budget_seconds for point in points) >= 2 * 3600
    scale, unit = (3600.0, "hours") if hours else (60.0, "minutes")
    figure = Figure(figsize=(12, 4), layout="constrained")
    for axes, (label, value) in zip(figure.subplots(1, 2), (("eval loss", "eval_loss"), ("perplexity", "perplexity"))):
        for kind, name in KINDS.items():
            series = [point for point in points if point.kind == kind and point.eval_loss is not None]
            if series:
                axes.plot([point.budget_seconds / scale for point in series],
                          [getattr(point, value) for point in series],
                          marker="*" if kind == "end" else "o", markersize=10 if kind == "end" else 5,
                          linestyle="-" if kind == "cooldown" else ":", label=name)
        axes.set_xlabel(f"budget ({unit})")
        axes.set_ylabel(label)
        axes.grid(alpha=0.3)
        axes.legend(loc="best", fontsize=8)
    figure.suptitle(f"budget curve: {title}")
    return figure


def budget_curve_markdown(points: list[BudgetPoint], output_dir: str | Path) -> list[str]:
    """The report's section: one row per model, by kind then budget."""
    lines = ["## Budget curve", "", f"![budget curve]({PLOT_FILE})", "",
             "| model | kind | budget (h) | eval loss | perplexity |", "| --- | --- | --- | --- | --- |"]
    for point in points:
        folder = Path(point.snapshot_dir)
        model = folder.relative_to(output_dir).as_posix() if folder.is_relative_to(output_dir) else str(folder)
        lines.append(f"| `{model}` | {KINDS[point.kind]} | {point.budget_seconds / 3600:.4g} | "
                     f"{point.eval_loss:.4f} | {point.perplexity:.4g} |")
    lines += ["", f"Every model evaluated on the same masked validation examples ({CACHE_FILE})."]
    return lines


def write_budget_curve(
    output_dir: str | Path, report_dir: str | Path, max_examples: int = 512, separate_runs=()
) -> list[str] | None:
    """
    Evaluate and plot the budget curve of the run in `output_dir` (with the ends of `separate_runs`) into
    `report_dir` (`budget_curve.png`) when it has cooled-down models; returns the report's markdown section (which
    says why when the models cannot be evaluated), or `None` for a run without cooldowns.

    Raises:
        ValueError: one of `separate_runs` is no finished run.
    """
    points = budget_points(output_dir, separate_runs)
    if not any(point.kind == "cooldown" for point in points):
        return None
    report_dir = Path(report_dir)
    try:
        evaluate_points(points, report_dir / CACHE_FILE, max_examples)
    except ValueError as error:  # the run's data is gone or has no validation split: the rest of the report stands
        logger.warning(f"No budget curve: {error}")
        return ["## Budget curve", "", f"Not drawn: {error}."]
    budget_curve_figure(points, Path(output_dir).name).savefig(report_dir / PLOT_FILE, dpi=100)
    return budget_curve_markdown(points, output_dir)
