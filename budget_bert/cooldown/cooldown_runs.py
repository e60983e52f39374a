"""Which cooldowns a warmup-stable-decay run allows, and the `run_mlm.py` flags of each.

A `--curve wsd` run holds its peak learning rate from the end of its warmup until its own cooldown starts, at
`1 - P_run` of its budget `T`, and keeps a training checkpoint at each of its `--finetune_time_markers`
(`output_dir/marker_checkpoints/marker-0.40/`). A marker checkpoint at elapsed time `t` inside that constant phase
is exactly where a wsd run with the budget `B = t / (1 - P)` would start its cooldown of share `P`: resuming it with
`--total_training_time B` and the run's other flags continues the budget clock at `t` (`t / B = 1 - P`, past the
warmup), so the learning rate follows the wsd curve of budget `B` down to 0 at `B`. The result is the model of a
budget `B` for the price of `P * B` more training. The warmup is the one difference from a separate run of budget
`B`: it lasted `w * T`, not `w * B`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from transformers.trainer import TRAINER_STATE_NAME
from transformers.utils import logging

from budget_bert.cli import UsageError
from budget_bert.hub.redaction import is_secret_name
from budget_bert.pretraining.pretraining_arguments import COMMAND_LINE_RECORD
from trainer_callbacks import BudgetCallback
from trainer_callbacks.checkpoints import AUTO, newest_complete_checkpoint
from trainer_callbacks.snapshots import (
    RUN_ARGUMENTS_FILE,
    SNAPSHOTS_DIR,
    marker_checkpoint_folders,
    snapshot_folders,
    snapshot_name,
)


logger = logging.get_logger(__name__)

COOLDOWN_DIR = "cooldown"
"""The folder under the run's `output_dir` that holds one `run_mlm.py` output folder per cooldown."""
COOLDOWN_SNAPSHOT_PREFIX = f"{COOLDOWN_DIR}-"
"""How the name of a cooldown's end snapshot (and of its Hub branch) begins: `cooldown-budget-<B>h`."""
# Flags of the original run that a cooldown sets itself, or that would do something else in it.
_REPLACED_FLAGS = frozenset({
    "output_dir", "total_training_time", "early_exit_time_marker", "finetune_time_markers", "resume_from_checkpoint",
    "overwrite_output_dir", "cooldown_proportion", "end_snapshot_name", "push_to_hub", "hub_model_id",
    "hub_private_repo", "local_rank",
})


def cooldown_name(budget_seconds: float) -> str:
    """The folder name of the cooldown to the budget `budget_seconds`, e.g. `budget-12h` or `budget-0.1667h`."""
    return f"budget-{budget_seconds / 3600:.4g}h"


@dataclass(frozen=True)
class Cooldown:
    """
    One cooldown of a wsd run: from the marker checkpoint `checkpoint` (taken at `start_seconds` of the run's budget)
    to the equivalent budget `budget_seconds`, with the cooldown share `cooldown_proportion`.

    Its `run_mlm.py` run writes into `output_dir` (`<run>/cooldown/budget-<B>h/`) and ends in the finetuning snapshot
    `output_dir/finetune_snapshots/<snapshot_name>` (`cooldown-budget-<B>h`, also its Hub branch).
    """

    marker: str
    checkpoint: Path
    start_seconds: float
    budget_seconds: float
    cooldown_proportion: float
    output_dir: Path
    run_flags: tuple[str, ...]

    @property
    def name(self) -> str:
        """`budget-<B>h`: the folder name under `<run>/cooldown/`."""
        return self.output_dir.name

    @property
    def snapshot_name(self) -> str:
        """The name of the snapshot the cooldown ends in, and of its Hub branch: `cooldown-budget-<B>h`."""
        return f"{COOLDOWN_SNAPSHOT_PREFIX}{self.name}"

    @property
    def snapshot_dir(self) -> Path:
        """The finished cooldown's snapshot folder."""
        return self.output_dir / SNAPSHOTS_DIR / self.snapshot_name

    @property
    def finished(self) -> bool:
        """Whether the cooldown's snapshot is in place (a rerun skips it)."""
        return (self.snapshot_dir / "config.json").is_file()

    def flags(self, hub_model_id: str | None = None, extra: list[str] | tuple[str, ...] = ()) -> list[str]:
        """
        The `run_mlm.py` flags of this cooldown: the original run's, with the budget, output folder, checkpoint and
        cooldown share of this one, no markers, and `extra` flags in place of the run's flags of the same name.
        With `hub_model_id`, the snapshot is pushed there (on its own branch).

        It resumes from the marker checkpoint the first time and from its own newest complete checkpoint when it
        was stopped (a preemption) and is run again.
        """
        extra = list(extra)
        kept = without_flags(self.run_flags, _REPLACED_FLAGS | _flag_names(extra))
        resume = AUTO if newest_complete_checkpoint(self.output_dir) is not None else str(self.checkpoint)
        flags = [
            *kept,
            "--output_dir", str(self.output_dir),
            "--total_training_time", repr(self.budget_seconds / 3600),
            "--cooldown_proportion", repr(self.cooldown_proportion),
            "--end_snapshot_name", self.snapshot_name,
            "--resume_from_checkpoint", resume,
        ]
        if hub_model_id is not None:
            flags += ["--push_to_hub", "--hub_model_id", hub_model_id]
        return flags + extra


def cooldown_snapshot_folders(output_dir: str | Path) -> list[Path]:
    """The snapshot folders of the finished cooldowns of the wsd run in `output_dir`, by name."""
    root = Path(output_dir) / COOLDOWN_DIR
    runs = sorted(folder for folder in root.iterdir() if folder.is_dir()) if root.is_dir() else []
    return [folder for run in runs for folder in snapshot_folders(run)
            if folder.name == f"{COOLDOWN_SNAPSHOT_PREFIX}{run.name}"]


def _flag_names(flags) -> set[str]:
    return {token[2:].split("=", 1)[0].replace("-", "_") for token in flags if token.startswith("--")}


def without_flags(flags, names: set[str] | frozenset[str]) -> list[str]:
    """
    `flags` (a command line's flags) without the flags called one of `names` (`--name value`, `--name=value` or a
    bare `--name`), nor any secret flag (`--hub_token X`: a replayed run takes the token from the environment).
    """
    kept, dropping = [], False
    for token in flags:
        if token.startswith("--"):
            name = token[2:].split("=", 1)[0].replace("-", "_")
            dropping = name in names or is_secret_name(name)
        if not dropping:
            kept.append(token)
    return kept


def read_run_arguments(checkpoint: Path) -> dict:
    """The run arguments recorded in a marker checkpoint (`run_arguments.json`, written with it)."""
    path = checkpoint / RUN_ARGUMENTS_FILE
    try:
        arguments = json.loads(path.read_text())
    except FileNotFoundError:
        raise UsageError(
            f"{checkpoint} has no {RUN_ARGUMENTS_FILE}: it is not a marker checkpoint of run_mlm.py"
        ) from None
    except ValueError as error:
        raise UsageError(f"{path} is unreadable ({error})") from None
    if COMMAND_LINE_RECORD not in arguments or "BudgetArguments" not in arguments:
        raise UsageError(f"{path} records no command line: the run is from an older run_mlm.py; run it again")
    return arguments


def plan_cooldowns(
    output_dir: str | Path, markers: list[float] | None = None, cooldown_proportion: float | None = None
) -> list[Cooldown]:
    """
    The cooldowns of the wsd run in `output_dir`: one per marker (fractions of its budget; by default every marker
    checkpoint in the run's constant phase, the others named in a warning), each to the budget `t / (1 - P)`, `P`
    being `cooldown_proportion` (by default the run's own `--cooldown_proportion`).

    Raises:
        UsageError: listing every marker asked for that cannot be cooled down (no marker checkpoint, or not in the
            run's constant phase), each in one line with the fix; or no marker at all can be.
    """
    output_dir = Path(output_dir)
    kept = marker_checkpoint_folders(output_dir)
    if not kept:
        raise UsageError(
            f"{output_dir} holds no marker checkpoint (marker_checkpoints/): give the --output_dir of a run_mlm.py "
            "run with --curve wsd and --finetune_time_markers that has reached a marker"
        )
    names = sorted(kept) if markers is None else [snapshot_name(marker) for marker in markers]
    problems, cooldowns = [], []
    for name in names:
        if name not in kept:
            problems.append(f"--markers: {output_dir} has no marker checkpoint {name} (it has {', '.join(kept)})")
            continue
        cooldown, problem = _plan(output_dir, name, kept[name], cooldown_proportion)
        if problem:
            problems.append(problem)
        else:
            cooldowns.append(cooldown)
    if markers is None and cooldowns:
        for problem in problems:
            logger.warning(f"Skipping {problem.removeprefix('--markers: ')}")
    elif problems:
        raise UsageError(problems)
    return cooldowns


def _plan(output_dir: Path, name: str, checkpoint: Path, cooldown_proportion: float | None):
    arguments = read_run_arguments(checkpoint)
    budget = arguments["BudgetArguments"]
    state = json.loads((checkpoint / TRAINER_STATE_NAME).read_text())
    clock = BudgetCallback.saved_clock(state)
    if budget.get("curve") != "wsd" or clock is None:
        return None, f"--markers: {name}: from a --curve {budget.get('curve')} run; only a wsd run can be cooled down"
    run_budget, start = clock.budget_seconds, clock.elapsed
    warmup, run_cooldown = budget["warmup_proportion"], budget["cooldown_proportion"]
    proportion = run_cooldown if cooldown_proportion is None else cooldown_proportion
    hours = f"{start / 3600:.4g} h of the {run_budget / 3600:.4g} h budget"
    if not 0 < proportion <= 1 - warmup or proportion >= 1:
        return None, (f"--cooldown_proportion {proportion}: must be in (0, {1 - warmup:g}], so that the cooldown "
                      f"starts after the warmup (the run's --warmup_proportion {warmup}), and below 1")
    if start < warmup * run_budget:
        return None, (f"--markers: {name}: taken at {hours}, inside the warmup (until {warmup:g}): cool down "
                      "markers of the constant phase")
    if start > (1 - run_cooldown) * run_budget:
        return None, (f"--markers: {name}: taken at {hours}, inside the run's own cooldown (from "
                      f"{1 - run_cooldown:g}): cool down markers of the constant phase, up to {1 - run_cooldown:g}")
    budget_seconds = start / (1 - proportion)
    cooldown = Cooldown(
        marker=name,
        checkpoint=checkpoint,
        start_seconds=start,
        budget_seconds=budget_seconds,
        cooldown_proportion=proportion,
        output_dir=output_dir / COOLDOWN_DIR / cooldown_name(budget_seconds),
        run_flags=tuple(arguments[COMMAND_LINE_RECORD][1:]),
    )
    return cooldown, None
