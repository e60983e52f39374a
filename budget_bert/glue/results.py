"""Tables of a GLUE sweep: per task, per configuration, and the GLUE average, as the paper reports them.

The academic-budget-bert paper (Izsak et al., 2021, appendix "Finetuning Hyperparameters"): "We run each
configuration using 5 random seeds and select the median of the best configuration." So, per task:

- a configuration is a (learning rate, batch size) pair; its score is the median, over seeds, of the task's
  headline dev metric (`budget_bert.glue.tasks`), and its best is the highest single run;
- the task's score is the median of the configuration with the highest median (ties: the higher best run,
  then the earlier configuration); the best single run over all configurations is shown next to it;
- the GLUE average is the mean of the task scores over the tasks of the GLUE average (all but WNLI) that have
  finished runs; the table says how many of the eight it covers. The same average of best single runs is
  shown for reference.

Scores are shown x100 (the paper's units). Runs that are not finished, or whose headline metric is NaN
(a correlation of constant predictions), are left out of the medians and counted in the tables.
"""

import csv
import json
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from transformers.utils import logging

from budget_bert.glue.runtime import RESULTS_FILE
from budget_bert.glue.tasks import GLUE_AVERAGE_TASKS, get_task

logger = logging.get_logger(__name__)


class SweepRun(Protocol):
    """What the tables need from a run (`budget_bert.glue.sweep.Run` has it)."""

    task: str
    learning_rate: float
    batch_size: int
    seed: int
    output_dir: Path


@dataclass(frozen=True)
class ConfigSummary:
    """One (learning rate, batch size) configuration of a task.

    Args:
        learning_rate, batch_size: the configuration.
        runs: runs planned for it (one per seed).
        scores: headline scores (x100) of its finished runs, by seed.
        medians: median (x100) of every reported metric over those runs, by metric key (`eval_f1`, ...).
    """

    learning_rate: float
    batch_size: int
    runs: int
    scores: dict[int, float]
    medians: dict[str, float]

    @property
    def median(self) -> float:
        """Median headline score over seeds (NaN when no run finished)."""
        return statistics.median(self.scores.values()) if self.scores else math.nan

    @property
    def best(self) -> float:
        """Best single headline score (NaN when no run finished)."""
        return max(self.scores.values()) if self.scores else math.nan


@dataclass(frozen=True)
class TaskSummary:
    """All configurations of one task, and the paper's score for it."""

    task: str
    headline: str
    metric_keys: tuple[str, ...]
    configs: tuple[ConfigSummary, ...]

    @property
    def best_config(self) -> ConfigSummary | None:
        """The configuration with the highest median (ties: higher best run, then the earlier one)."""
        finished = [config for config in self.configs if config.scores]
        return max(finished, key=lambda config: (config.median, config.best)) if finished else None

    @property
    def score(self) -> float:
        """The paper's score: the median of the best configuration (NaN when nothing finished)."""
        return self.best_config.median if self.best_config else math.nan

    @property
    def best_run(self) -> float:
        """The best single run over all configurations (NaN when nothing finished)."""
        return max((config.best for config in self.configs if config.scores), default=math.nan)


def metric_keys(task_name: str) -> tuple[str, ...]:
    """The `all_results.json` keys of a task's dev metrics, headline first (`eval_f1`, `eval_accuracy`, ...)."""
    task = get_task(task_name)
    names = [task.headline, *(name for name in task.metrics if name != task.headline)]
    if len(task.metrics) > 1:
        names.append("combined_score")
    return tuple(f"eval_{name}{suffix}" for _, suffix in task.eval_splits for name in names)


def _read_metrics(run: SweepRun) -> dict[str, float] | None:
    path = run.output_dir / RESULTS_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def summarize(runs: Sequence[SweepRun]) -> dict[str, TaskSummary]:
    """Read the finished runs' `all_results.json` and summarise them per task and configuration."""
    grouped: dict[str, dict[tuple[float, int], list[tuple[int, dict | None]]]] = {}
    for run in runs:
        configs = grouped.setdefault(run.task, {})
        configs.setdefault((run.learning_rate, run.batch_size), []).append((run.seed, _read_metrics(run)))
    summaries = {}
    for task, configs in grouped.items():
        keys = metric_keys(task)
        config_summaries = []
        for (learning_rate, batch_size), seeds in configs.items():
            scores, values = {}, {key: [] for key in keys}
            for seed, metrics in seeds:
                if metrics is None:
                    continue
                if math.isnan(metrics[keys[0]]):
                    logger.warning(f"{task} lr={learning_rate:g} bs={batch_size} seed={seed}: {keys[0]} is NaN")
                    continue
                scores[seed] = 100 * metrics[keys[0]]
                for key in keys:
                    if key in metrics:
                        values[key].append(100 * metrics[key])
            medians = {key: statistics.median(found) for key, found in values.items() if found}
            config_summaries.append(ConfigSummary(learning_rate, batch_size, len(seeds), scores, medians))
        summaries[task] = TaskSummary(task, get_task(task).headline, keys, tuple(config_summaries))
    return summaries


def glue_average(summaries: dict[str, TaskSummary], best_runs: bool = False) -> tuple[float, int]:
    """Mean of the task scores (or best runs) over the GLUE-average tasks that have finished runs, and their count."""
    values = [
        summary.best_run if best_runs else summary.score
        for task, summary in summaries.items()
        if task in GLUE_AVERAGE_TASKS and summary.best_config is not None
    ]
    return (statistics.fmean(values) if values else math.nan), len(values)


def _format(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.2f}"


def _markdown(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows]) + "\n"


def _write_csv(path: Path, header: list[str], rows: list[list]) -> None:
    with path.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(header)
        writer.writerows(rows)


def write_task_table(summary: TaskSummary, results_dir: Path) -> None:
    """Write `<task>.md` and `<task>.csv`: one row per configuration, scores x100."""
    other_keys = summary.metric_keys[1:]
    header = ["learning_rate", "batch_size", "finished", f"{summary.headline} median", f"{summary.headline} best",
              *(f"{key.removeprefix('eval_')} median" for key in other_keys)]

    def cells(config: ConfigSummary, fmt) -> list:
        others = [fmt(config.medians.get(key, math.nan)) for key in other_keys]
        return [f"{config.learning_rate:g}", config.batch_size, f"{len(config.scores)}/{config.runs}",
                fmt(config.median), fmt(config.best), *others]

    _write_csv(results_dir / f"{summary.task}.csv", header, [cells(config, float) for config in summary.configs])
    best = summary.best_config
    verdict = (
        f"Best configuration (highest median over seeds): learning_rate {best.learning_rate:g}, batch_size "
        f"{best.batch_size}. Task score (median of the best configuration): {_format(summary.score)}; best single "
        f"run: {_format(summary.best_run)}.\n"
        if best else "No finished run yet.\n"
    )
    rows = [[str(cell) for cell in cells(config, _format)] for config in summary.configs]
    text = f"# {summary.task.upper()}: dev {summary.headline} (x100)\n\n" + _markdown(header, rows) + "\n" + verdict
    (results_dir / f"{summary.task}.md").write_text(text)


def write_tables(summaries: dict[str, TaskSummary], results_dir: Path) -> Path:
    """Write every task's table and `summary.md`/`summary.csv` (task scores and GLUE average); return summary.md."""
    results_dir.mkdir(parents=True, exist_ok=True)
    for summary in summaries.values():
        write_task_table(summary, results_dir)
    header = ["task", "metric", "learning_rate", "batch_size", "finished", "score (median, best config)", "best run"]
    rows = []
    for summary in summaries.values():
        best = summary.best_config
        finished = sum(len(config.scores) for config in summary.configs)
        planned = sum(config.runs for config in summary.configs)
        rows.append([summary.task, summary.headline, f"{best.learning_rate:g}" if best else "-",
                     str(best.batch_size) if best else "-", f"{finished}/{planned}", summary.score, summary.best_run])
    average, count = glue_average(summaries)
    average_best, _ = glue_average(summaries, best_runs=True)
    average_row = [f"GLUE average ({count} of {len(GLUE_AVERAGE_TASKS)} tasks)", "", "", "", "", average, average_best]
    _write_csv(results_dir / "summary.csv", header, rows + [average_row])
    shown = [[cell if isinstance(cell, str) else _format(cell) for cell in row] for row in rows + [average_row]]
    text = (
        "# GLUE dev results (x100)\n\nTask score: median over seeds of the best configuration (Izsak et al., 2021); "
        "GLUE average over the tasks of the average (WNLI excluded).\n\n" + _markdown(header, shown)
    )
    path = results_dir / "summary.md"
    path.write_text(text)
    return path
