"""The schedule a budget run followed, recorded step by step, so that a run on other hardware can replay it.

A time budget ties a run to its hardware: on a faster machine the same flags take more steps, and the learning rate,
validations and snapshots fall at other steps. [`ScheduleRecordCallback`] records what the budget clock read after
every optimizer step (in whole microseconds, as the clock reads them), and the steps at which the run validated,
took snapshots, saved checkpoints and stopped, with the budget and the flags that shaped the schedule. That record,
[`ScheduleRecord`], is data: a small JSON file, `budget_schedule.json`. [`ScheduleRecord.replay_clock`] turns it into
a [`~trainer_callbacks.clock.ReplayClock`], which reads at step `n` what the recorded clock read at step `n`: with it
in place of the budget clock, and nothing else changed, a run takes every time-based decision at the recorded step.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from transformers import TrainerControl, TrainerState, TrainingArguments
from transformers.trainer_callback import ExportableState
from transformers.utils import logging

from trainer_callbacks.clock import BudgetClock, ReplayClock, ticks_to_seconds, whole_ticks
from trainer_callbacks.exported_state import RestoresOwnState, restore_exported_attributes, saved_attributes
from trainer_callbacks.snapshots import SnapshotInfo


logger = logging.get_logger(__name__)

SCHEDULE_FILE = "budget_schedule.json"
"""The record's file, in `output_dir` and in every snapshot folder."""
FORMAT_VERSION = 1


@dataclass
class ScheduleRecord:
    """
    The schedule of a run: what its budget clock read after each optimizer step, and what happened at which step.

    Attributes:
        elapsed_ticks (`list[int]`): The budget used, in whole microseconds: at the start (index 0, step
            `first_step`) and after each optimizer step (index `i`, step `first_step + i`).
        first_step (`int`): The step of `elapsed_ticks[0]`: 0, unless recording began when a run resumed from a
            checkpoint written without it.
        runs (`list[dict]`): One entry per `trainer.train()` that added steps (a fresh start or a resume):
            `start_step`, `budget_seconds`, `schedule` (the flags that shape the schedule: curve, warmup, markers,
            ...), `conditions` (what one step means: global batch, processes, data) and `replay_of` (the record it
            replayed, or `None`).
        validation_steps (`list[int]`): Steps at which the run validated.
        checkpoint_steps (`list[int]`): Steps of the training checkpoints it saved.
        snapshot_steps (`dict[str, int]`): Finetuning snapshot name (`marker-0.50`, `end`) to its step.
        stop_step (`int`, *optional*): The step at which training stopped; `None` while it runs or when it was
            interrupted.
        interrupted_steps (`list[int]`): Steps at which a run was interrupted (preempted) and saved to resume.

    In JSON the readings are stored as differences from the previous one, comma-separated in one string
    (`elapsed_tick_deltas`): about 7 characters a step for second-long steps, under 1 MB for 10^5 steps.
    """

    elapsed_ticks: list[int] = field(default_factory=list)
    first_step: int = 0
    runs: list[dict[str, Any]] = field(default_factory=list)
    validation_steps: list[int] = field(default_factory=list)
    checkpoint_steps: list[int] = field(default_factory=list)
    snapshot_steps: dict[str, int] = field(default_factory=dict)
    stop_step: int | None = None
    interrupted_steps: list[int] = field(default_factory=list)

    @property
    def last_step(self) -> int:
        """The last recorded step (`first_step - 1` for an empty record)."""
        return self.first_step + len(self.elapsed_ticks) - 1

    @property
    def budget_seconds(self) -> float | None:
        """The budget of the latest run, `None` for an empty record."""
        return self.runs[-1]["budget_seconds"] if self.runs else None

    def elapsed_seconds(self, step: int) -> float:
        """The budget seconds the clock read after `step`, exactly as it read them."""
        if not self.first_step <= step <= self.last_step:
            raise ValueError(f"Step {step} is not in the record (steps {self.first_step} to {self.last_step}).")
        return ticks_to_seconds(self.elapsed_ticks[step - self.first_step])

    def record_step(self, step: int, elapsed_seconds: float) -> None:
        """Record the clock's reading after `step`, the step after the last recorded one (or the first)."""
        if self.elapsed_ticks and step != self.last_step + 1:
            raise ValueError(f"Step {step} does not follow the last recorded step, {self.last_step}.")
        if not self.elapsed_ticks:
            self.first_step = step
        self.elapsed_ticks.append(whole_ticks(elapsed_seconds))

    def continue_at(self, step: int) -> bool:
        """
        Make the record end at `step`, where a run resumes: whatever it holds after `step` (from a run that went
        further) goes. `False`, and the record is left as it is, when it has no reading for `step`.
        """
        if not self.first_step <= step <= self.last_step:
            return False
        del self.elapsed_ticks[step - self.first_step + 1 :]
        for steps in (self.validation_steps, self.checkpoint_steps, self.interrupted_steps):
            steps[:] = [s for s in steps if s <= step]
        self.snapshot_steps = {name: s for name, s in self.snapshot_steps.items() if s <= step}
        if self.stop_step is not None and self.stop_step > step:
            self.stop_step = None
        self.runs = [run for run in self.runs if run["start_step"] <= step]
        return True

    def replay_clock(self, time_fn: Callable[[], float] = time.monotonic) -> ReplayClock:
        """A clock that reads this record's readings, step by step, against the latest run's budget."""
        if not self.elapsed_ticks:
            raise ValueError("The schedule record holds no steps: there is nothing to replay.")
        readings = [ticks_to_seconds(ticks) for ticks in self.elapsed_ticks]
        return ReplayClock(self.budget_seconds, readings, first_step=self.first_step, time_fn=time_fn)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (see the class docstring)."""
        deltas = [b - a for a, b in zip([0, *self.elapsed_ticks], self.elapsed_ticks)]
        return {
            "format_version": FORMAT_VERSION,
            "first_step": self.first_step,
            "last_step": self.last_step,
            "stop_step": self.stop_step,
            "runs": self.runs,
            "validation_steps": self.validation_steps,
            "checkpoint_steps": self.checkpoint_steps,
            "snapshot_steps": self.snapshot_steps,
            "interrupted_steps": self.interrupted_steps,
            "elapsed_tick_deltas": ",".join(map(str, deltas)),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ScheduleRecord:
        """Read the JSON form written by [`~ScheduleRecord.to_dict`]; a `ValueError` for anything else."""
        if data.get("format_version") != FORMAT_VERSION:
            raise ValueError(
                f"format_version {data.get('format_version')!r}, this code reads schedule records of version "
                f"{FORMAT_VERSION}"
            )
        try:
            encoded = data["elapsed_tick_deltas"]
            return cls(
                elapsed_ticks=list(itertools.accumulate(int(delta) for delta in encoded.split(","))) if encoded else [],
                first_step=int(data["first_step"]),
                runs=list(data["runs"]),
                validation_steps=list(data["validation_steps"]),
                checkpoint_steps=list(data["checkpoint_steps"]),
                snapshot_steps=dict(data["snapshot_steps"]),
                stop_step=data["stop_step"],
                interrupted_steps=list(data["interrupted_steps"]),
            )
        except (KeyError, TypeError, AttributeError, ValueError) as error:
            raise ValueError(f"not a schedule record ({type(error).__name__}: {error})") from error

    def save(self, folder: str | Path) -> Path:
        """Write the record into `folder` as `budget_schedule.json` (atomically); returns its path."""
        path = Path(folder) / SCHEDULE_FILE
        partial = path.with_name(f".{SCHEDULE_FILE}.partial")
        partial.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        partial.replace(path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> ScheduleRecord:
        """
        The record in `path`: a `budget_schedule.json` file, a folder holding one (a run's `output_dir`, a snapshot),
        or a training checkpoint (its `trainer_state.json` carries the record up to its step). A `ValueError` names
        the path when there is none or it is unreadable.
        """
        path = Path(path)
        if path.is_dir() and (path / SCHEDULE_FILE).is_file():
            path = path / SCHEDULE_FILE
        elif path.is_dir() and (path / "trainer_state.json").is_file():
            return cls._from_trainer_state(path / "trainer_state.json")
        if not path.is_file():
            raise ValueError(f"{path}: no {SCHEDULE_FILE} (nor a checkpoint's trainer_state.json) there")
        try:
            return cls.from_dict(json.loads(path.read_text()))
        except ValueError as error:  # json.JSONDecodeError is one
            raise ValueError(f"{path}: unreadable schedule record ({error})") from error

    @classmethod
    def _from_trainer_state(cls, path: Path) -> ScheduleRecord:
        try:
            saved = saved_attributes(json.loads(path.read_text()).get("stateful_callbacks", {}), ScheduleRecordCallback)
            if saved is None:
                raise ValueError("the run was trained without a ScheduleRecordCallback")
            return cls.from_dict(saved)
        except ValueError as error:
            raise ValueError(f"{path}: no schedule record ({error})") from error


class ScheduleRecordCallback(RestoresOwnState, ExportableState):
    """
    Records the run's schedule ([`ScheduleRecord`]) and writes it as `<output_dir>/budget_schedule.json` whenever a
    checkpoint is saved and when training ends. Give [`~ScheduleRecordCallback.save_into_snapshot`] to
    [`~trainer_callbacks.FinetuneSnapshotCallback`] as (or in) its `on_snapshot` hook to note each snapshot and copy
    the record into its folder.

    Put it right after [`~trainer_callbacks.BudgetCallback`]: it reads the clock that callback ticks in
    `on_optimizer_step`, at each step end, and it must note the stop before the `end` snapshot is taken. The record is
    exported into every checkpoint's `trainer_state.json`; a resumed run continues it from the checkpoint's step (steps
    recorded after that step by a run that went further are dropped), adding an entry to `runs`. Leave
    `--restore_callback_states_from_checkpoint` off: this callback restores itself.

    With a [`~trainer_callbacks.clock.ReplayClock`], the run records the readings it replays, and adds the real time
    it has run to every log, as `replay_wall_hours`.

    Args:
        clock (`BudgetClock`): The run's clock (or a `ReplayClock`), ticked by the budget callback.
        schedule (`Mapping[str, Any]`, *optional*): The flags that shape the schedule (curve, warmup, markers, ...),
            recorded so that a replay can check its own against them.
        conditions (`Mapping[str, Any]`, *optional*): What one optimizer step means (global batch, processes,
            data), recorded for the same reason.
        replay_of (`str`, *optional*): Where the replayed record came from, when `clock` replays one.
    """

    def __init__(
        self,
        clock: BudgetClock,
        schedule: Mapping[str, Any] | None = None,
        conditions: Mapping[str, Any] | None = None,
        replay_of: str | None = None,
    ):
        self.clock = clock
        self.schedule = dict(schedule or {})
        self.conditions = dict(conditions or {})
        self.replay_of = replay_of
        self.record = ScheduleRecord()
        self._training = False
        self._output_dir: str | None = None

    def state(self) -> dict:
        return {"args": {}, "attributes": self.record.to_dict()}

    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs):
        if isinstance(self.clock, ReplayClock) and self.clock.steps != state.global_step:
            raise ValueError(
                f"The replayed schedule starts at step {self.clock.first_step} but training starts at step "
                f"{state.global_step}: resume from a checkpoint of the recorded run at a step from "
                f"{self.clock.first_step} to {self.clock.last_step}."
            )
        self.record = ScheduleRecord.from_dict(restore_exported_attributes(state, self))
        step = state.global_step
        if not self.record.continue_at(step):
            if step > 0:
                logger.warning(
                    f"The checkpoint of step {step} holds no schedule record: this run records its schedule from "
                    f"step {step} on, and a replay can only start there."
                )
            self.record = ScheduleRecord()
            self.record.record_step(step, self.clock.elapsed)
        if step > 0 and step not in self.record.checkpoint_steps:
            self.record.checkpoint_steps.append(step)  # the checkpoint this run resumed from
        self.record.runs.append(
            {
                "start_step": step,
                "budget_seconds": self.clock.budget_seconds,
                "schedule": self.schedule,
                "conditions": self.conditions,
                "replay_of": self.replay_of,
            }
        )
        self._training = True
        self._output_dir = args.output_dir if args.should_save else None

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs):
        self.record.record_step(state.global_step, self.clock.elapsed)

    def on_evaluate(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs):
        if self._training and state.global_step not in self.record.validation_steps[-1:]:
            self.record.validation_steps.append(state.global_step)

    def on_log(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, logs=None, **kwargs):
        if isinstance(self.clock, ReplayClock) and logs is not None:
            logs["replay_wall_hours"] = self.clock.wall_seconds / 3600
            # Trainer.log appended a copy of these logs to log_history just before calling on_log.
            if state.log_history:
                state.log_history[-1]["replay_wall_hours"] = logs["replay_wall_hours"]

    def on_save(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs):
        if state.global_step not in self.record.checkpoint_steps[-1:]:
            self.record.checkpoint_steps.append(state.global_step)
        if args.should_save:
            self.record.save(args.output_dir)

    def on_train_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs):
        self._training = False
        if self.clock.interrupted:
            self.record.interrupted_steps.append(state.global_step)
        else:
            self.record.stop_step = state.global_step
        if args.should_save:
            self.record.save(args.output_dir)
        if isinstance(self.clock, ReplayClock) and state.is_world_process_zero:
            logger.info(
                f"Replayed the schedule of {self.replay_of} up to step {state.global_step}: "
                f"{self.clock.elapsed / 3600:.4g} h of recorded budget in {self.clock.wall_seconds / 3600:.4g} h of "
                "real time."
            )

    def save_into_snapshot(self, folder: Path, info: SnapshotInfo) -> None:
        """Note the snapshot `info`; write the record, up to its step, into its folder `folder` and `output_dir`."""
        self.record.snapshot_steps[info.name] = info.global_step
        self.record.save(folder)
        if self._output_dir is not None:
            self.record.save(self._output_dir)
