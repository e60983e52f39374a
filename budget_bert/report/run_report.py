"""The run report: plots of a pretraining run's curves and a short markdown summary, from its output folder.

    python -m budget_bert.report OUTPUT_DIR [--report_dir DIR] [--separate_runs DIR ...]

It reads `trainer_state.json` (the log history, with the budget keys that `BudgetProgressCallback` adds, and the
budget clock that `BudgetCallback` exports) and `finetune_snapshots/*/snapshot_info.json`, and writes into
`OUTPUT_DIR/report/`: `training_loss.png`, `eval_loss.png` and `learning_rate.png` (each against elapsed time
and against optimizer steps, with the snapshot markers drawn as vertical lines) and `report.md`. A run that
stopped before its end is read from its last checkpoint. A wsd run with cooldowns (`python -m budget_bert.cooldown`)
also gets its budget curve, `budget_curve.png` (see `budget_bert.report.budget_curve`).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from matplotlib.figure import Figure
from transformers.trainer_utils import get_last_checkpoint
from transformers.utils import logging

from budget_bert.cli import UsageError, run_cli
from budget_bert.report.budget_curve import write_budget_curve
from trainer_callbacks.budget import BudgetCallback
from trainer_callbacks.snapshots import SNAPSHOTS_DIR, SnapshotInfo, load_snapshots


logger = logging.get_logger(__name__)

PROG = "python -m budget_bert.report"
TRAINER_STATE_FILE = "trainer_state.json"
REPORT_DIR = "report"
REPORT_FILE = "report.md"
PLOTS = {
    "training_loss.png": ("loss", "training loss"),
    "eval_loss.png": ("eval_loss", "eval loss"),
    "learning_rate.png": ("learning_rate", "learning rate"),
}
_ELAPSED_KEY = "budget_elapsed_hours"


@dataclass(frozen=True)
class RunHistory:
    """What a pretraining output folder says about its run.

    Args:
        output_dir: the run's output folder.
        state_file: the `trainer_state.json` read (the folder's own, or its last checkpoint's).
        log_history: the Trainer's log entries, in order.
        global_step: optimizer steps done.
        tokens_seen: input tokens trained on (`None` without `--include_num_input_tokens_seen`).
        budget_seconds, elapsed_seconds: the budget and the seconds of it used (`None` for a run without the
            budget callback).
        snapshots: the finetuning snapshots found, in the order they were taken.
    """

    output_dir: Path
    state_file: Path
    log_history: list[dict]
    global_step: int
    tokens_seen: int | None
    budget_seconds: float | None
    elapsed_seconds: float | None
    snapshots: list[SnapshotInfo]

    def entries(self, key: str) -> list[dict]:
        """The log entries that carry `key` (`loss`, `eval_loss`, `learning_rate`, ...)."""
        return [entry for entry in self.log_history if key in entry]

    @property
    def final_train_loss(self) -> float | None:
        """The last logged training loss."""
        entries = self.entries("loss")
        return entries[-1]["loss"] if entries else None

    @property
    def final_eval_loss(self) -> float | None:
        """The last validation MLM loss (the end-of-run validation when the run did one)."""
        entries = self.entries("eval_loss")
        return entries[-1]["eval_loss"] if entries else None

    @property
    def final_perplexity(self) -> float | None:
        """`exp(final_eval_loss)`."""
        loss = self.final_eval_loss
        return None if loss is None else _perplexity(loss)

    @property
    def tokens_per_second(self) -> float | None:
        """Tokens seen over the budget seconds used (evaluations and checkpoint saving included)."""
        if self.tokens_seen is None or not self.elapsed_seconds:
            return None
        return self.tokens_seen / self.elapsed_seconds


def _perplexity(loss: float) -> float:
    return math.exp(loss) if loss < 700 else math.inf


def load_run(output_dir: str | Path) -> RunHistory:
    """Read a pretraining output folder: its `trainer_state.json` (else its last checkpoint's) and its snapshots.

    Raises:
        ValueError: the folder has no `trainer_state.json` and no checkpoint, or the file is not a Trainer state.
    """
    output_dir = Path(output_dir)
    state_file = output_dir / TRAINER_STATE_FILE
    if not state_file.is_file():
        checkpoint = get_last_checkpoint(output_dir) if output_dir.is_dir() else None
        if checkpoint is None:
            raise ValueError(
                f"{output_dir} holds no {TRAINER_STATE_FILE} and no checkpoint-N folder: give the --output_dir of a "
                "run_mlm.py run"
            )
        state_file = Path(checkpoint) / TRAINER_STATE_FILE
        logger.warning(f"{output_dir} has no final {TRAINER_STATE_FILE} (unfinished run?): reading {state_file}")
    try:
        state = json.loads(state_file.read_text())
        log_history = list(state["log_history"])
    except (ValueError, KeyError, TypeError) as err:
        raise ValueError(f"{state_file} is not a Trainer state file ({type(err).__name__}: {err})") from err
    clock = BudgetCallback.saved_clock(state)
    return RunHistory(
        output_dir=output_dir,
        state_file=state_file,
        log_history=log_history,
        global_step=state.get("global_step", 0),
        tokens_seen=state.get("num_input_tokens_seen") or None,
        budget_seconds=None if clock is None else clock.budget_seconds,
        elapsed_seconds=None if clock is None else clock.elapsed,
        snapshots=load_snapshots(output_dir),
    )


def _time_unit(seconds: float) -> tuple[str, float]:
    """The unit that shows `seconds` best on an axis, and the seconds in one such unit."""
    if seconds < 120:
        return "seconds", 1.0
    if seconds < 2 * 3600:
        return "minutes", 60.0
    return "hours", 3600.0


def metric_figure(run: RunHistory, key: str, label: str) -> Figure | None:
    """The logged `key` against elapsed budget time and against steps, side by side, snapshot markers as lines.

    The time panel is left out for a run whose logs carry no elapsed time; it shows the end of the budget as a
    gray line. `None` when no log entry has `key`.
    """
    entries = run.entries(key)
    if not entries:
        return None
    timed = [entry for entry in entries if _ELAPSED_KEY in entry]
    axes_specs = []
    if timed:
        horizon = max([timed[-1][_ELAPSED_KEY] * 3600, run.budget_seconds or 0.0])
        unit, scale = _time_unit(horizon)
        axes_specs.append((
            f"elapsed budget time ({unit})",
            [entry[_ELAPSED_KEY] * 3600 / scale for entry in timed],
            [entry[key] for entry in timed],
            [(info.name, info.elapsed_seconds / scale) for info in run.snapshots],
            None if run.budget_seconds is None else run.budget_seconds / scale,
        ))
    axes_specs.append((
        "optimizer step",
        [entry["step"] for entry in entries],
        [entry[key] for entry in entries],
        [(info.name, info.global_step) for info in run.snapshots],
        None,
    ))

    figure = Figure(figsize=(6 * len(axes_specs), 4), layout="constrained")
    for axes, (xlabel, xs, ys, markers, budget) in zip(figure.subplots(1, len(axes_specs), squeeze=False)[0],
                                                        axes_specs):
        axes.plot(xs, ys, marker="o" if len(xs) < 30 else None, markersize=3, label=label)
        for name, x in markers:
            axes.axvline(x, color="tab:red", linestyle="--", linewidth=1)
            axes.annotate(name, (x, 1.0), xycoords=("data", "axes fraction"), rotation=90, va="top", ha="right",
                          fontsize=8, color="tab:red")
        if budget is not None:
            axes.axvline(budget, color="gray", linewidth=1, label="budget")
        right = max([*xs, *(x for _, x in markers), budget or 0.0])
        axes.set_xlim(0, right * 1.04 or 1)
        axes.set_xlabel(xlabel)
        axes.set_ylabel(label)
        axes.grid(alpha=0.3)
        axes.legend(loc="best", fontsize=8)
    figure.suptitle(f"{label}: {run.output_dir.name}")
    return figure


def _fmt(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "n/a"
    unit, scale = _time_unit(seconds)
    return f"{seconds / scale:.3g} {unit} ({seconds / 3600:.3g} h)"


def summary_markdown(run: RunHistory, plots: Sequence[str]) -> str:
    """The report's markdown: budget, steps, tokens/s, final losses, the snapshot table and the plots."""
    used = "n/a"
    if run.elapsed_seconds is not None:
        used = _duration(run.elapsed_seconds)
        if run.budget_seconds:
            used += f", {run.elapsed_seconds / run.budget_seconds:.0%} of the budget"
    train = run.entries("loss")
    evals = run.entries("eval_loss")
    lines = [
        f"# Run report: {run.output_dir}",
        "",
        f"Read from `{run.state_file}`.",
        "",
        "| | |",
        "| --- | --- |",
        f"| budget | {_duration(run.budget_seconds)} |",
        f"| budget used | {used} |",
        f"| optimizer steps | {run.global_step:,} |",
        f"| tokens seen | {_fmt(run.tokens_seen, ',')} |",
        f"| tokens/s | {_fmt(run.tokens_per_second, ',.0f')} (tokens seen / budget time used) |",
        f"| final training loss | {_fmt(run.final_train_loss, '.4f')}"
        + (f" (step {train[-1]['step']})" if train else "") + " |",
        f"| final eval loss | {_fmt(run.final_eval_loss, '.4f')}"
        + (f" (perplexity {run.final_perplexity:.4g}, step {evals[-1]['step']}, {len(evals)} validations)"
           if evals else "") + " |",
    ]
    if train and any("tokens_per_second" in entry for entry in train):
        rates = [entry["tokens_per_second"] for entry in train if "tokens_per_second" in entry]
        lines.append(f"| tokens/s between logs | median {statistics.median(rates):,.0f} over {len(rates)} logs |")
    lines += ["", "## Finetuning snapshots", ""]
    if run.snapshots:
        lines += ["| snapshot | marker | step | elapsed | share of budget |", "| --- | --- | --- | --- | --- |"]
        for info in run.snapshots:
            marker = "end" if info.marker is None else f"{info.marker:g}"
            lines.append(
                f"| `{SNAPSHOTS_DIR}/{info.name}` | {marker} | {info.global_step:,} | "
                f"{_duration(info.elapsed_seconds)} | {info.budget_fraction:.1%} |"
            )
    else:
        lines.append("None.")
    lines += ["", "## Curves", ""]
    lines += [f"![{PLOTS[name][1]}]({name})" for name in plots] or ["Nothing was logged."]
    return "\n".join(lines) + "\n"


def write_report(
    output_dir: str | Path, report_dir: str | Path | None = None, separate_runs: Sequence[str | Path] = ()
) -> Path:
    """Write the plots and `report.md` of the run in `output_dir` into `report_dir` (default `output_dir/report`),
    with the budget curve when the run has cooldowns (and the ends of `separate_runs` on it, see
    `budget_bert.report.budget_curve`).

    Returns:
        The path of `report.md`.
    """
    run = load_run(output_dir)
    report_dir = Path(report_dir) if report_dir is not None else Path(output_dir, REPORT_DIR)
    report_dir.mkdir(parents=True, exist_ok=True)
    plots = []
    for name, (key, label) in PLOTS.items():
        figure = metric_figure(run, key, label)
        if figure is not None:
            figure.savefig(report_dir / name, dpi=100)
            plots.append(name)
    budget_curve = write_budget_curve(output_dir, report_dir, separate_runs=separate_runs)
    path = report_dir / REPORT_FILE
    path.write_text(summary_markdown(run, plots) + ("\n" + "\n".join(budget_curve) + "\n" if budget_curve else ""))
    logger.info(f"Wrote the run report {path} ({len(plots)} plots)")
    return path


def report_command(argv: list[str]) -> Path:
    """Write the report the command line asks for and print the path of `report.md`; bad input is a `UsageError`."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Write the plots (loss, eval loss, learning rate against elapsed time and steps, snapshot "
        "markers) and the markdown summary of a run_mlm.py run.",
    )
    parser.add_argument("output_dir", help="The --output_dir of a run_mlm.py run.")
    parser.add_argument("--report_dir", default=None, help="Where to write the report (default: OUTPUT_DIR/report).")
    parser.add_argument(
        "--separate_runs", nargs="*", default=(),
        help="Output folders of separate runs (other budgets, same data and flags) whose end models go on the budget "
        "curve of a run with cooldowns, next to its cooled-down models.",
    )
    args = parser.parse_args(argv)
    try:
        path = write_report(args.output_dir, args.report_dir, args.separate_runs)
    except ValueError as error:
        raise UsageError(str(error)) from None
    print(path)
    return path


def main(argv: list[str] | None = None) -> Path:
    """
    Command line: `python -m budget_bert.report OUTPUT_DIR [--report_dir DIR] [--separate_runs DIR ...]`; an
    expected error ends it with one line (see `budget_bert.cli`).
    """
    return run_cli(PROG, report_command, argv)

