"""`run_mlm.py --replay_schedule_from`: find a recorded schedule, check that it means the same here, and replay it.

A replay is a run_mlm run whose budget clock is a `ReplayClock` over the recorded run's schedule
(`trainer_callbacks.schedule_record`); nothing else changes. It needs the recorded run's schedule flags (the budget,
the curve, validation, markers, ...) and global batch: with others, step `n` would not mean what it meant. The data,
the processes and the split of the global batch may differ: the run says so and goes on.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from huggingface_hub import hf_hub_download
from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError
from transformers.utils import logging

from budget_bert.cli import UsageError, raise_problems
from budget_bert.data.metadata import PreparedDataMetadata
from trainer_callbacks.clock import ReplayClock
from trainer_callbacks.schedule_record import SCHEDULE_FILE, ScheduleRecord


if TYPE_CHECKING:
    from budget_bert.pretraining.pretraining_arguments import PretrainingArguments


logger = logging.get_logger(__name__)

FLAG = "--replay_schedule_from"
# The BudgetArguments fields that do not shape the schedule; every other one must match the recorded run's.
NOT_SCHEDULE_FLAGS = frozenset(
    {
        "overwrite_output_dir",
        "project_name",
        "end_snapshot_name",
        "hub_push_timeout",
        "hub_push_timeout_on_preemption",
        "num_epochs_between_checkpoints",
        "replay_schedule_from",
    }
)
_HUB_REPO = re.compile(r"(?P<repo>[\w.-]+/[\w.-]+)(?:@(?P<revision>[^\s@]+))?")


def schedule_flags(budget_args: Any, learning_rate: float) -> dict[str, Any]:
    """
    The flags that shape a run's schedule, as recorded and compared by a replay: every field of the budget
    arguments but those of `NOT_SCHEDULE_FLAGS`, and the peak learning rate.
    """
    flags = {f.name: getattr(budget_args, f.name) for f in fields(budget_args) if f.name not in NOT_SCHEDULE_FLAGS}
    return {**flags, "learning_rate": learning_rate}


# The flags that say which raw text is prepared on the fly, and how.
_RAW_TEXT_FLAGS = ("dataset_name", "dataset_config_name", "train_file", "text_column", "sample_by",
                   "validation_proportion", "validation_file", "max_seq_length", "num_shards")


def data_conditions(metadata: PreparedDataMetadata | None, data_args: Any) -> dict[str, Any]:
    """
    What identifies the training data: for prepared data (`--dataset_path`), its sizes and a fingerprint of its
    metadata without the paths it was made from (`metadata_fingerprint`); for raw text prepared on the fly, the
    flags that prepare it, with file names instead of paths.
    """
    if metadata is None:
        flags = {name: getattr(data_args, name, None) for name in _RAW_TEXT_FLAGS}
        for name in ("train_file", "validation_file"):
            flags[name] = [Path(path).name for path in flags[name]] if flags[name] else None
        return {"raw_text": flags}
    described = asdict(metadata)
    sizes = {key: described[key] for key in ("train_examples", "train_tokens", "validation_examples", "max_seq_length")}
    paths_and_versions = ("arguments", "versions", "tokenizer_name")
    identity = {key: value for key, value in described.items() if key not in paths_and_versions}
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]
    return {**sizes, "metadata_fingerprint": digest}


def run_conditions(
    global_batch_size: int, world_size: int, per_device_batch_size: int, accumulation_steps: int, data: dict
) -> dict[str, Any]:
    """What one optimizer step means: the examples it takes, how they are split, and the data."""
    return {
        "global_batch_size": global_batch_size,
        "world_size": world_size,
        "per_device_train_batch_size": per_device_batch_size,
        "gradient_accumulation_steps": accumulation_steps,
        "data": data,
    }


def load_replay_schedule(args: PretrainingArguments) -> ReplaySchedule | None:
    """
    The schedule `--replay_schedule_from` names (`None` without the flag), checked against this run: a
    `UsageError` for one this run cannot replay, a warning for each difference that leaves a step's meaning.
    """
    source = args.budget.replay_schedule_from
    if source is None:
        return None
    try:
        replay = ReplaySchedule.load(source, token=args.hub_push.token if args.hub_push else None)
    except ValueError as error:
        raise UsageError(str(error)) from None
    conditions = args.conditions()
    raise_problems(replay.problems(args.schedule(), conditions))
    for notice in replay.notices(conditions):
        logger.warning(notice)
    logger.info(
        f"Replaying the schedule of {source}: steps {replay.record.first_step} to {replay.record.last_step}, "
        "the budget clock reads the recorded time of each step; the real time is logged as replay_wall_hours."
    )
    return replay


@dataclass
class ReplaySchedule:
    """
    A recorded schedule to replay, and where it came from.

    Args:
        record: the recorded run's schedule.
        source: the `--replay_schedule_from` value it was loaded from.
    """

    record: ScheduleRecord
    source: str

    @classmethod
    def load(cls, source: str, token: str | None = None) -> ReplaySchedule:
        """
        The schedule at `source`: a run's `--output_dir`, a snapshot folder, a `budget_schedule.json`, a training
        checkpoint, or a Hub repo id with an optional `@revision` (a branch such as `end`, a tag or a commit), whose
        `budget_schedule.json` is downloaded. A `ValueError` names the flag and the fix.
        """
        if Path(source).exists():
            try:
                return cls(ScheduleRecord.load(source), source)
            except ValueError as error:
                raise ValueError(f"{FLAG} {error}: give a run's --output_dir or one of its snapshots") from None
        match = _HUB_REPO.fullmatch(source)
        if match is None:
            raise ValueError(
                f"{FLAG} {source}: no such file or folder, nor a Hub repo id (user/name, optionally @revision)"
            )
        try:
            path = hf_hub_download(match["repo"], SCHEDULE_FILE, revision=match["revision"], token=token)
        except (EntryNotFoundError, HfHubHTTPError, OSError) as error:
            reason = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise ValueError(
                f"{FLAG} {source}: cannot download {SCHEDULE_FILE} from the Hub ({type(error).__name__}: {reason}); "
                "check the repo id and revision (a snapshot's branch, e.g. @end), the token, and that the Hub is "
                "reachable"
            ) from None
        try:
            return cls(ScheduleRecord.load(path), source)
        except ValueError as error:
            raise ValueError(f"{FLAG} {source}: {error}") from None

    @property
    def recorded_run(self) -> dict[str, Any]:
        """The latest recorded run (`ScheduleRecord.runs` entry): its schedule flags and conditions."""
        return self.record.runs[-1]

    def problems(self, schedule: Mapping[str, Any], conditions: Mapping[str, Any]) -> list[str]:
        """
        Why this run cannot replay the record, one line each naming the flag and the fix: schedule flags that differ
        from the recorded run's, and another global batch.
        """
        if not self.record.runs:
            return [f"{FLAG} {self.source}: the record has no run"]
        recorded = self.recorded_run
        problems = []
        differing = [
            f"--{name} {schedule[name]} (recorded: {recorded['schedule'][name]})"
            for name in sorted(set(schedule) & set(recorded["schedule"]))
            if schedule[name] != recorded["schedule"][name]
        ]
        if differing:
            problems.append(
                f"{FLAG} {self.source}: this run's schedule flags differ from the recorded run's: "
                f"{', '.join(differing)}; give the recorded values"
            )
        batch, recorded_batch = conditions["global_batch_size"], recorded["conditions"].get("global_batch_size")
        if recorded_batch is not None and batch != recorded_batch:
            problems.append(
                f"{FLAG} {self.source}: the recorded run took {recorded_batch} examples per optimizer step, this run "
                f"{batch} (--per_device_train_batch_size x --gradient_accumulation_steps x processes): its steps "
                f"would not mean the same; choose them so that the global batch is {recorded_batch}"
            )
        return problems

    def notices(self, conditions: Mapping[str, Any]) -> list[str]:
        """What differs from the recorded run without changing what a step means, and a record that ends early."""
        recorded = self.recorded_run["conditions"]
        notices = []
        world, recorded_world = conditions["world_size"], recorded.get("world_size")
        if recorded_world is not None and world != recorded_world:
            notices.append(
                f"Replaying a run of {recorded_world} processes on {world}, with the same global batch of "
                f"{conditions['global_batch_size']} (micro batch {conditions['per_device_train_batch_size']} x "
                f"{conditions['gradient_accumulation_steps']} accumulation steps here; recorded: "
                f"{recorded.get('per_device_train_batch_size')} x {recorded.get('gradient_accumulation_steps')}): "
                "each step means the same, but the results may differ in the last bits."
            )
        if "data" in recorded and conditions["data"] != recorded["data"]:
            notices.append(
                f"The training data differs from the recorded run's (here {conditions['data']}, recorded "
                f"{recorded['data']}): the schedule is replayed step for step, but the model will not be the same."
            )
        budgets = sorted({run["budget_seconds"] for run in self.record.runs})
        if len(budgets) > 1:
            notices.append(
                f"The recorded run changed its budget when it resumed ({', '.join(f'{b:g} s' for b in budgets)}): the "
                f"replay reads every step against the latest, {self.record.budget_seconds:g} s."
            )
        if self.record.stop_step is None:
            notices.append(
                f"The schedule of {self.source} ends at step {self.record.last_step} without a stop (it comes from a "
                "snapshot, or from a run that was interrupted or still runs): the replay stops there."
            )
        return notices

    def clock(self, time_fn: Callable[[], float] = time.monotonic) -> ReplayClock:
        """The clock that replays the record; `time_fn` measures the real time, which decides nothing."""
        return self.record.replay_clock(time_fn=time_fn)
