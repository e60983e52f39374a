"""Finetuning snapshots: plain `save_pretrained` folders at budget markers and at the end of training, and the
training checkpoints kept at markers (to cool a constant-rate run down into shorter budgets later).

One description of a snapshot, [`SnapshotInfo`] (its marker, step, elapsed time and budget), is written into every
snapshot folder by [`FinetuneSnapshotCallback`] and read back by whatever uses the snapshots afterwards (a run
report, a push to the Hub). The folder names below are the snapshot format those readers share.

A folder is never replaced in place: the new one is written under a temporary name (`.NAME.partial`), the old one
renamed away (`.NAME.old`), the new one renamed into place, and only then is the old one deleted. A crash leaves
either name complete: a `.NAME.old` without `NAME` is put back when training starts again.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from transformers import TrainerControl, TrainerState, TrainingArguments
from transformers.trainer import TRAINER_STATE_NAME
from transformers.trainer_callback import ExportableState
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR
from transformers.utils import logging

from trainer_callbacks.checkpoints import incompleteness, newest_complete_checkpoint
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
MARKER_CHECKPOINTS_DIR = "marker_checkpoints"
"""The folder under `output_dir` that holds the training checkpoints kept at markers, one folder per marker."""
_PARTIAL_SUFFIX = ".partial"
_OLD_SUFFIX = ".old"


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


def marker_checkpoint_folders(output_dir: str | Path) -> dict[str, Path]:
    """The complete training checkpoints kept at markers under `output_dir/marker_checkpoints`, by marker name."""
    root = Path(output_dir) / MARKER_CHECKPOINTS_DIR
    folders = sorted(root.glob("[!.]*")) if root.is_dir() else []
    return {folder.name: folder for folder in folders if incompleteness(folder) is None}


def snapshot_folders(output_dir: str | Path) -> list[Path]:
    """The finished snapshot folders of a run, sorted by name with `end` last (a snapshot being written is not)."""
    root = Path(output_dir) / SNAPSHOTS_DIR
    # A folder whose name starts with a dot is a snapshot being written (or left by a crash).
    folders = [folder for folder in root.glob("[!.]*") if (folder / "config.json").is_file()] if root.is_dir() else []
    return sorted(folders, key=lambda folder: (folder.name == END_SNAPSHOT_NAME, folder.name))



def replace_folder(new: Path, final: Path) -> None:
    """
    Put the complete folder `new` in place of `final`: `final` (if any) is renamed to `.NAME.old` and deleted only
    once `new` holds its name, so that a crash in between leaves one of them complete (see
    [`restore_interrupted_replacements`]).
    """
    old = final.with_name(f".{final.name}{_OLD_SUFFIX}")
    if old.exists():
        shutil.rmtree(old)
    if final.exists():
        final.rename(old)
    new.rename(final)
    if old.exists():
        shutil.rmtree(old)


def restore_interrupted_replacements(root: Path) -> None:
    """
    Finish what a crash during [`replace_folder`] in `root` left: an old folder without a new one under its name is
    put back; one that was replaced is deleted. Folders being written (`.NAME.partial`) are deleted.
    """
    if not root.is_dir():
        return
    for leftover in sorted(root.glob(".*")):
        if not leftover.is_dir():
            continue
        if leftover.name.endswith(_OLD_SUFFIX):
            replaced = root / leftover.name[1 : -len(_OLD_SUFFIX)]
            if not replaced.exists():
                logger.warning(f"Restoring {replaced}: a crash interrupted its replacement.")
                leftover.rename(replaced)
                continue
        if leftover.name.endswith((_OLD_SUFFIX, _PARTIAL_SUFFIX)):
            shutil.rmtree(leftover)


def _link_or_copy(source: str, destination: str) -> None:
    try:
        os.link(source, destination)
    except OSError:  # a file system without hard links
        shutil.copy2(source, destination)


def _checkpoint_step(folder: Path) -> int | None:
    try:
        return json.loads((folder / TRAINER_STATE_NAME).read_text())["global_step"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


class SnapshotWriteError(OSError):
    """Writing a finetuning snapshot (or a marker checkpoint) failed; the message names the intact checkpoint."""


class FinetuneSnapshotCallback(RestoresOwnState, ExportableState):
    """
    Saves a finetuning snapshot at the first step end at or past each of `markers` (fractions of the budget) and,
    if `save_at_end`, when training ends, into `<output_dir>/finetune_snapshots/<name>/` (`marker-0.50`, ...,
    `end`). A snapshot is a `save_pretrained` folder (safetensors weights and config), the tokenizer (the
    Trainer's `processing_class`), `run_arguments.json` (the TrainingArguments, whose `to_dict` hides the Hub token,
    and `run_arguments`, passed through `redact`) and `snapshot_info.json` ([`SnapshotInfo`]); it loads with
    `AutoModelForSequenceClassification.from_pretrained`.

    At each of `checkpoint_markers` the callback also asks the Trainer for a training checkpoint (`should_save`):
    the Trainer's own `checkpoint-N/`, with model, optimizer, scheduler, RNG states and the budget clock, made
    complete by [`~trainer_callbacks.CompleteCheckpointCallback`] (which must come before this callback). Once it
    is complete, it is kept under `<output_dir>/marker_checkpoints/<name>/`, with `run_arguments.json`, as a copy
    made of hard links (no extra disk space where the file system has them; a plain copy where it has not), so
    that the checkpoint rotation (`--save_total_limit`), which deletes only `checkpoint-N/` folders, never deletes
    it. Resuming from it continues the run from the marker, e.g. with another budget (a cooldown).

    Only the main process writes. A snapshot is written to a temporary folder and then swapped in (see
    [`replace_folder`]), so a crash cannot leave a half-written one under its final name, nor lose the one it
    replaces. The markers already taken are exported into every checkpoint's `trainer_state.json` and restored on
    resume: no marker is saved twice. (A marker taken after the checkpoint a run resumes from is taken again,
    replacing the folder; the marker checkpoints of steps after it are deleted when training starts, as they belong
    to a run that went further.) Under DeepSpeed, ZeRO stages 1 and 2 only: ZeRO-3 shards the weights that
    `save_pretrained` would write.

    A snapshot that cannot be written (a full disk) does not end the run at once, which would lose the training
    since the last checkpoint: its partial folder is deleted, the clock's interrupt is requested, so that every
    process stops at the next step and saves a checkpoint as on a preemption (see
    [`~trainer_callbacks.PreemptionCallback`]), and once that checkpoint is saved a [`SnapshotWriteError`] names it.
    If that save fails too, the Trainer's error is raised instead, and the newest complete checkpoint is the one
    intact. A failed `end` snapshot raises at once: the run's last checkpoint is already saved.

    Args:
        clock (`BudgetClock`): The run's clock, ticked by [`~trainer_callbacks.BudgetCallback`].
        markers (`Sequence[float]`, *optional*): Fractions of the budget, in `(0, 1]`, with distinct
            [`snapshot_name`]s.
        save_at_end (`bool`, *optional*, defaults to `True`): Also save a snapshot named `end_name` when training
            ends (not when it is interrupted, see [`~trainer_callbacks.PreemptionCallback`]).
        run_arguments (`Mapping[str, Any]`, *optional*): More arguments to record next to the TrainingArguments,
            e.g. `{"ModelArguments": dataclasses.asdict(model_args), ...}`.
        redact (`Callable[[dict], dict]`, *optional*): Returns a copy of the recorded arguments with the secrets
            hidden, applied before they are written; by default they are written as they are.
        on_snapshot (`Callable[[Path, SnapshotInfo], None]`, *optional*): Called on the main process after each
            snapshot is in place (e.g. to queue a push to the Hub).
        checkpoint_markers (`Sequence[float]`, *optional*): The markers, among `markers`, at which a training
            checkpoint is also saved and kept.
        end_name (`str`, *optional*, defaults to `"end"`): The folder name of the snapshot at the end of training.
    """

    def __init__(
        self,
        clock: BudgetClock,
        markers: Sequence[float] = (),
        save_at_end: bool = True,
        run_arguments: Mapping[str, Any] | None = None,
        redact: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
        on_snapshot: Callable[[Path, SnapshotInfo], None] | None = None,
        checkpoint_markers: Sequence[float] = (),
        end_name: str = END_SNAPSHOT_NAME,
    ):
        self.clock = clock
        self.markers = sorted(markers)
        self.save_at_end = save_at_end
        self.run_arguments = dict(run_arguments or {})
        self.redact = redact
        self.on_snapshot = on_snapshot
        self.checkpoint_markers = set(checkpoint_markers)
        self.end_name = end_name
        self.taken_markers: list[float] = []
        self._checkpoints_to_keep: list[str] = []
        self._failure: str | None = None

    def state(self) -> dict:
        return {"args": {}, "attributes": {"taken_markers": list(self.taken_markers)}}

    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs):
        self.taken_markers = list(restore_exported_attributes(state, self).get("taken_markers", []))
        self._checkpoints_to_keep, self._failure = [], None
        if not state.is_world_process_zero:
            return
        restore_interrupted_replacements(Path(args.output_dir) / SNAPSHOTS_DIR)
        kept = Path(args.output_dir) / MARKER_CHECKPOINTS_DIR
        restore_interrupted_replacements(kept)
        for name, folder in marker_checkpoint_folders(args.output_dir).items():
            step = _checkpoint_step(folder)
            if step is not None and step > state.global_step:
                logger.warning(
                    f"Deleting the marker checkpoint {folder} (step {step}): it is from a run that went past step "
                    f"{state.global_step}, where this run starts; this run takes it again at its marker."
                )
                shutil.rmtree(folder)

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs):
        if self._failure is not None:
            return control  # stopping: see on_save
        for marker in self.markers:
            if marker not in self.taken_markers and self.clock.fraction >= marker:
                name = snapshot_name(marker)
                try:
                    self._snapshot(args, state, name, marker, **kwargs)
                except OSError as error:
                    self._failure = f"writing the finetuning snapshot {name} failed ({type(error).__name__}: {error})"
                    logger.error(f"{self._failure}: stopping at the next step with a training checkpoint.")
                    self.clock.request_interrupt()
                    return control
                self.taken_markers.append(marker)
                if marker in self.checkpoint_markers:
                    control.should_save = True
                    self._checkpoints_to_keep.append(name)
        return control

    def on_save(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs):
        names, self._checkpoints_to_keep = self._checkpoints_to_keep, []
        if not state.is_world_process_zero:
            return
        checkpoint = Path(args.output_dir, f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}")
        if self._failure is not None:
            raise SnapshotWriteError(
                f"{self._failure}; training stopped and saved the checkpoint {checkpoint}. Free disk space, then run "
                "the same command again to resume (the snapshot is taken then)."
            )
        for name in names:
            self._keep_marker_checkpoint(args, checkpoint, name)

    def on_train_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs):
        # An interrupted (preempted) run has not ended: the run that resumes it takes the `end` snapshot.
        if not self.save_at_end or self.clock.interrupted:
            return
        try:
            self._snapshot(args, state, self.end_name, None, **kwargs)
        except OSError as error:
            newest = newest_complete_checkpoint(args.output_dir)
            intact = f"the checkpoint {newest} is complete" if newest else "no complete checkpoint was saved"
            raise SnapshotWriteError(
                f"writing the finetuning snapshot {self.end_name} failed ({type(error).__name__}: {error}); {intact}. "
                "Free disk space, then save the snapshot from it (save_pretrained) or run again."
            ) from error

    def _write_run_arguments(self, args: TrainingArguments, folder: Path) -> None:
        arguments = {**self.run_arguments, "TrainingArguments": args.to_dict()}
        if self.redact is not None:
            arguments = self.redact(arguments)
        (folder / RUN_ARGUMENTS_FILE).write_text(json.dumps(arguments, indent=2, default=str) + "\n")

    def _keep_marker_checkpoint(self, args: TrainingArguments, checkpoint: Path, name: str) -> None:
        problem = incompleteness(checkpoint)
        if problem is not None:
            logger.warning(
                f"Not keeping {checkpoint} as the marker checkpoint {name}: it is not complete ({problem}); put a "
                "CompleteCheckpointCallback before the FinetuneSnapshotCallback."
            )
            return
        root = Path(args.output_dir) / MARKER_CHECKPOINTS_DIR
        final, partial = root / name, root / f".{name}{_PARTIAL_SUFFIX}"
        try:
            if partial.exists():
                shutil.rmtree(partial)
            root.mkdir(parents=True, exist_ok=True)
            shutil.copytree(checkpoint, partial, copy_function=_link_or_copy)
            self._write_run_arguments(args, partial)  # what a cooldown replays
            replace_folder(partial, final)
        except OSError as error:
            shutil.rmtree(partial, ignore_errors=True)
            raise SnapshotWriteError(
                f"keeping {checkpoint} as the marker checkpoint {final} failed ({type(error).__name__}: {error}); "
                f"{checkpoint} itself is complete. Free disk space, then run the same command again to resume."
            ) from error
        logger.info(f"Marker checkpoint {final} (step {_checkpoint_step(final)}): a cooldown can resume from it.")

    def _snapshot(self, args, state, name, marker, model=None, processing_class=None, **kwargs) -> None:
        if not state.is_world_process_zero:
            return
        info = SnapshotInfo(name, marker, state.global_step, self.clock.elapsed, self.clock.budget_seconds)
        root = Path(args.output_dir) / SNAPSHOTS_DIR
        final, partial = root / name, root / f".{name}{_PARTIAL_SUFFIX}"
        try:
            if partial.exists():
                shutil.rmtree(partial)
            model.save_pretrained(partial)
            if processing_class is not None:
                processing_class.save_pretrained(partial)
            self._write_run_arguments(args, partial)
            info.save(partial)
        except OSError:
            shutil.rmtree(partial, ignore_errors=True)  # gives back the space a full disk needs for the checkpoint
            raise
        if final.exists():
            logger.warning(f"Replacing the finetuning snapshot {final} (left by a run that resumed from before it).")
        replace_folder(partial, final)
        logger.info(
            f"Finetuning snapshot {final} at step {info.global_step}, {info.elapsed_seconds / 3600:.4g} h "
            f"({info.budget_fraction:.1%} of the budget)."
        )
        if self.on_snapshot is not None:
            self.on_snapshot(final, info)
