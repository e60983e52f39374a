"""Finetuning snapshots: plain `save_pretrained` folders at budget markers and at the end of training.

One description of a snapshot, [`SnapshotInfo`] (its marker, step, elapsed time and budget), is written into every
snapshot folder by [`FinetuneSnapshotCallback`] and read back by whatever uses the snapshots afterwards (a run
report, a push to the Hub). The folder names below are the snapshot format those readers share.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from transformers import TrainerControl, TrainerState, TrainingArguments
from transformers.trainer_callback import ExportableState
from transformers.utils import logging

from trainer_callbacks.clock import BudgetClock
from trainer_callbacks.exported_state import RestoresOwnState, restore_exported_attributes


logger = logging.get_logger(__name__)

SNAPSHOTS_DIR = "finetune_snapshots"
"""The folder under `output_dir` that holds one folder per snapshot."""
RUN_ARGUMENTS_FILE = "run_arguments.json"
"""The run's arguments (without secrets), in every snapshot folder."""
SNAPSHOT_INFO_FILE = "snapshot_info.json"
"""When the snapshot was taken ([`SnapshotInfo`]), in every snapshot folder."""
END_SNAPSHOT_NAME = "end"
"""The folder (and branch) of the snapshot taken at the end of training."""


def snapshot_name(marker: float) -> str:
    """The folder name of the snapshot at `marker`, e.g. `marker-0.50`."""
    return f"marker-{marker:.2f}" if round(marker, 2) == marker else f"marker-{marker:g}"


@dataclasses.dataclass(frozen=True)
class SnapshotInfo:
    """
    What a finetuning snapshot is: its folder name, the marker it was taken for (a fraction of the budget; `None`
    for the snapshot at the end), the optimizer step, and the budget seconds used then out of the budget's.
    """

    name: str
    marker: float | None
    global_step: int
    elapsed_seconds: float
    budget_seconds: float

    @property
    def budget_fraction(self) -> float:
        """The fraction of the budget used when the snapshot was taken."""
        return self.elapsed_seconds / self.budget_seconds

    def save(self, folder: str | Path) -> Path:
        """Write this description into the snapshot folder `folder` (as `snapshot_info.json`); returns its path."""
        path = Path(folder) / SNAPSHOT_INFO_FILE
        path.write_text(json.dumps(dataclasses.asdict(self), indent=2) + "\n")
        return path

    @classmethod
    def load(cls, folder: str | Path) -> SnapshotInfo | None:
        """The description saved in the snapshot folder `folder`, or `None` when it has none."""
        path = Path(folder) / SNAPSHOT_INFO_FILE
        if not path.is_file():
            return None
        saved = json.loads(path.read_text())
        if "budget_seconds" not in saved:  # written before the budget was recorded: it follows from the fraction
            saved["budget_seconds"] = saved["elapsed_seconds"] / saved["budget_fraction"]
        saved.pop("budget_fraction", None)
        return cls(**saved)


def load_snapshots(output_dir: str | Path) -> list[SnapshotInfo]:
    """The [`SnapshotInfo`] of every finished snapshot under `output_dir/finetune_snapshots`, oldest first."""
    infos = [SnapshotInfo.load(folder) for folder in snapshot_folders(output_dir)]
    infos = [info for info in infos if info is not None]
    return sorted(infos, key=lambda info: (info.global_step, info.elapsed_seconds))


def snapshot_folders(output_dir: str | Path) -> list[Path]:
    """The finished snapshot folders of a run, sorted by name with `end` last (a snapshot being written is not)."""
    root = Path(output_dir) / SNAPSHOTS_DIR
    # A folder whose name starts with a dot is a snapshot being written (or left by a crash).
    folders = [folder for folder in root.glob("[!.]*") if (folder / "config.json").is_file()] if root.is_dir() else []
    return sorted(folders, key=lambda folder: (folder.name == END_SNAPSHOT_NAME, folder.name))


class FinetuneSnapshotCallback(RestoresOwnState, ExportableState):
    """
    Saves a finetuning snapshot at the first step end at or past each of `markers` (fractions of the budget) and,
    if `save_at_end`, when training ends, into `<output_dir>/finetune_snapshots/<name>/` (`marker-0.50`, ...,
    `end`). A snapshot is a `save_pretrained` folder (safetensors weights and config), the tokenizer (the
    Trainer's `processing_class`), `run_arguments.json` (the TrainingArguments, whose `to_dict` hides the Hub token,
    and `run_arguments`, passed through `redact`) and `snapshot_info.json` ([`SnapshotInfo`]); it loads with
    `AutoModelForSequenceClassification.from_pretrained`.

    Only the main process writes. A snapshot is written to a temporary folder and then renamed, so a crash cannot
    leave a half-written one under its final name. The markers already taken are exported into every checkpoint's
    `trainer_state.json` and restored on resume: no marker is saved twice. (A marker taken after the checkpoint a
    run resumes from is taken again, replacing the folder.) Under DeepSpeed, ZeRO stages 1 and 2 only: ZeRO-3
    shards the weights that `save_pretrained` would write.

    Args:
        clock (`BudgetClock`): The run's clock, ticked by [`~trainer_callbacks.BudgetCallback`].
        markers (`Sequence[float]`, *optional*): Fractions of the budget, in `(0, 1]`.
        save_at_end (`bool`, *optional*, defaults to `True`): Also save a snapshot named `end` when training ends
            (not when it is interrupted, see [`~trainer_callbacks.PreemptionCallback`]).
        run_arguments (`Mapping[str, Any]`, *optional*): More arguments to record next to the TrainingArguments,
            e.g. `{"ModelArguments": dataclasses.asdict(model_args), ...}`.
        redact (`Callable[[dict], dict]`, *optional*): Returns a copy of the recorded arguments with the secrets
            hidden, applied before they are written; by default they are written as they are.
        on_snapshot (`Callable[[Path, SnapshotInfo], None]`, *optional*): Called on the main process after each
            snapshot is in place (e.g. to queue a push to the Hub).
    """

    def __init__(
        self,
        clock: BudgetClock,
        markers: Sequence[float] = (),
        save_at_end: bool = True,
        run_arguments: Mapping[str, Any] | None = None,
        redact: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
        on_snapshot: Callable[[Path, SnapshotInfo], None] | None = None,
    ):
        markers = sorted(markers)
        problems = [f"{m} is not in (0, 1]" for m in markers if not 0 < m <= 1]
        if len({snapshot_name(m) for m in markers}) != len(markers):
            problems.append("two markers share a name: give distinct markers")
        if problems:
            raise ValueError(f"--finetune_time_markers {','.join(map(str, markers))}: " + "; ".join(problems) + ".")
        self.clock = clock
        self.markers = markers
        self.save_at_end = save_at_end
        self.run_arguments = dict(run_arguments or {})
        self.redact = redact
        self.on_snapshot = on_snapshot
        self.taken_markers: list[float] = []

    def state(self) -> dict:
        return {"args": {}, "attributes": {"taken_markers": list(self.taken_markers)}}

    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs):
        self.taken_markers = list(restore_exported_attributes(state, self).get("taken_markers", []))

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs):
        for marker in self.markers:
            if marker not in self.taken_markers and self.clock.fraction >= marker:
                self._snapshot(args, state, snapshot_name(marker), marker, **kwargs)
                self.taken_markers.append(marker)
        return control

    def on_train_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs):
        # An interrupted (preempted) run has not ended: the run that resumes it takes the `end` snapshot.
        if self.save_at_end and not self.clock.interrupted:
            self._snapshot(args, state, END_SNAPSHOT_NAME, None, **kwargs)

    def _snapshot(self, args, state, name, marker, model=None, processing_class=None, **kwargs) -> None:
        if not state.is_world_process_zero:
            return
        info = SnapshotInfo(name, marker, state.global_step, self.clock.elapsed, self.clock.budget_seconds)
        root = Path(args.output_dir) / SNAPSHOTS_DIR
        final, partial = root / name, root / f".{name}.partial"
        if partial.exists():
            shutil.rmtree(partial)
        model.save_pretrained(partial)
        if processing_class is not None:
            processing_class.save_pretrained(partial)
        arguments = {**self.run_arguments, "TrainingArguments": args.to_dict()}
        if self.redact is not None:
            arguments = self.redact(arguments)
        (partial / RUN_ARGUMENTS_FILE).write_text(json.dumps(arguments, indent=2, default=str) + "\n")
        info.save(partial)
        if final.exists():
            logger.warning(f"Replacing the finetuning snapshot {final} (left by a run that resumed from before it).")
            shutil.rmtree(final)
        partial.rename(final)
        logger.info(
            f"Finetuning snapshot {final} at step {info.global_step}, {info.elapsed_seconds / 3600:.4g} h "
            f"({info.budget_fraction:.1%} of the budget)."
        )
        if self.on_snapshot is not None:
            self.on_snapshot(final, info)
