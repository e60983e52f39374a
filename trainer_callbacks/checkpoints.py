"""Training checkpoints a crash cannot leave half-written and resumable: which are complete, which one to resume
from, which may be deleted, and the callbacks that mark, rotate and schedule them.

The stock Trainer writes `checkpoint-N/` in place, file by file and from several processes (DeepSpeed adds its own
sub-folders), so a job killed while saving leaves a folder that looks like a checkpoint and is not one. Writing it
under a temporary name and renaming it would mean replacing the Trainer's private `_save_checkpoint`. Instead, once
every process has written its part, the main process records the folder's files and sizes in a completeness marker,
written to a temporary name, synced and renamed into place ([`mark_complete`]), so that the marker exists whole or
not at all, and only after everything it vouches for is on disk. Resuming reads only marked folders
([`resolve_resume_checkpoint`]), and an older checkpoint is deleted only after a newer one is marked
([`rotate_checkpoints`]): a crash at any point leaves the previous complete checkpoint in place.
[`CompleteCheckpointCallback`] does the marking and rotating during training; [`ShardCheckpointCallback`] asks for
a checkpoint every few shards.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

from accelerate import PartialState
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR
from transformers.utils import logging

from trainer_callbacks.shards import check_steps_per_shard, completed_shards


logger = logging.get_logger(__name__)

# The name predates this library; kept so that the checkpoints of earlier runs stay resumable.
COMPLETE_MARKER = "budget_bert_complete.json"
_PARTIAL_MARKER = f".{COMPLETE_MARKER}.partial"
AUTO = "auto"
_CHECKPOINT_NAME = re.compile(rf"^{PREFIX_CHECKPOINT_DIR}-(\d+)$")


def checkpoint_folders(output_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    """Every `checkpoint-N` folder in `output_dir`, complete or not, as `(N, path)` sorted by step."""
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return []
    found = []
    for path in output_dir.iterdir():
        match = _CHECKPOINT_NAME.match(path.name)
        if match and path.is_dir():
            found.append((int(match.group(1)), path))
    return sorted(found)


def _files_and_sizes(folder: Path) -> dict[str, int]:
    return {
        path.relative_to(folder).as_posix(): path.stat().st_size
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.name not in (COMPLETE_MARKER, _PARTIAL_MARKER)
    }


def _fsync(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def mark_complete(folder: str | os.PathLike, global_step: int) -> Path:
    """
    Record `folder` as a complete checkpoint of step `global_step`: sync its files to disk, then write the marker
    listing them with their sizes, atomically. Call it on the main process once every process has saved its part.
    """
    folder = Path(folder)
    files = _files_and_sizes(folder)
    for name in files:
        _fsync(folder / name)
    marker = folder / COMPLETE_MARKER
    partial = folder / _PARTIAL_MARKER
    with partial.open("w") as file:
        json.dump({"global_step": global_step, "files": files}, file, indent=2)
        file.flush()
        os.fsync(file.fileno())
    os.replace(partial, marker)
    _fsync(folder)  # the rename itself
    return marker


def incompleteness(folder: str | os.PathLike) -> str | None:
    """Why `folder` is not a complete checkpoint (its save was interrupted, or a file changed since), or `None`."""
    folder = Path(folder)
    if not folder.is_dir():
        return "no such folder"
    marker = folder / COMPLETE_MARKER
    try:
        recorded = json.loads(marker.read_text())["files"]
    except FileNotFoundError:
        return f"no {COMPLETE_MARKER}: its save did not finish"
    except (ValueError, KeyError, TypeError):
        return f"{COMPLETE_MARKER} is unreadable"
    for name, size in recorded.items():
        path = folder / name
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != size:
            return f"{name} has {path.stat().st_size} bytes, {size} when the checkpoint was saved"
    return None


def complete_checkpoints(output_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    """The complete checkpoints in `output_dir`, as `(step, path)` sorted by step."""
    return [(step, path) for step, path in checkpoint_folders(output_dir) if incompleteness(path) is None]


def newest_complete_checkpoint(output_dir: str | os.PathLike, warn: bool = False) -> Path | None:
    """
    The complete checkpoint of `output_dir` with the highest step, or `None`. With `warn`, each newer folder that is
    skipped because it is incomplete is named in a warning.
    """
    for _, path in reversed(checkpoint_folders(output_dir)):
        problem = incompleteness(path)
        if problem is None:
            return path
        if warn:
            logger.warning(f"Skipping {path}: it is not a complete checkpoint ({problem}).")
    return None


def resolve_resume_checkpoint(
    output_dir: str | os.PathLike, resume_from_checkpoint: str | None, overwrite_output_dir: bool = False
) -> str | None:
    """
    The checkpoint a run resumes from, or `None` to start fresh.

    - `--resume_from_checkpoint auto`, or no `--resume_from_checkpoint` (as HuggingFace examples do): the newest
      complete checkpoint in `--output_dir`, skipping incomplete ones with a warning, or a fresh start if there is
      none. `--overwrite_output_dir` without `--resume_from_checkpoint` starts fresh.
    - `--resume_from_checkpoint PATH`: that checkpoint, which must be complete.

    Raises `ValueError` naming the flag and the fix when PATH is not a complete checkpoint.
    """
    if resume_from_checkpoint is None and overwrite_output_dir:
        return None
    if resume_from_checkpoint in (None, AUTO):
        newest = newest_complete_checkpoint(output_dir, warn=True)
        if newest is not None:
            logger.info(f"Resuming from {newest}, the newest complete checkpoint in {output_dir}.")
        elif resume_from_checkpoint == AUTO:
            logger.info(f"No complete checkpoint in {output_dir}: starting fresh.")
        return None if newest is None else str(newest)
    problem = incompleteness(resume_from_checkpoint)
    if problem is not None:
        newest = newest_complete_checkpoint(Path(resume_from_checkpoint).parent)
        alternative = f"{newest}, the newest complete one there" if newest else "--resume_from_checkpoint auto"
        raise ValueError(
            f"--resume_from_checkpoint {resume_from_checkpoint} is not a complete checkpoint ({problem}): resume "
            f"from {alternative}."
        )
    return resume_from_checkpoint


def retire_checkpoints_after(output_dir: str | os.PathLike, global_step: int) -> None:
    """
    Make the checkpoints of steps after `global_step` unusable for resuming, before a run starting at
    `global_step` writes its own: they belong to a run that went further (a resume from an earlier checkpoint, or a
    fresh start over old checkpoints). An incomplete one is deleted; a complete one loses its marker and keeps its
    files until this run saves the same step in place. Otherwise a crash of this run before that step would resume
    from the other run's checkpoint, and a crash while overwriting one would leave a marked mixture of both runs.
    """
    for step, path in checkpoint_folders(output_dir):
        if step <= global_step:
            continue
        if incompleteness(path) is None:
            logger.warning(
                f"{path} is from a run that went past step {global_step}, where this run starts: it is no longer "
                "resumable, and this run overwrites it if it gets there."
            )
            (path / COMPLETE_MARKER).unlink()
        else:
            logger.warning(f"Deleting {path}: incomplete, and after step {global_step}, where this run starts.")
            shutil.rmtree(path)


def rotate_checkpoints(output_dir: str | os.PathLike, save_total_limit: int | None, keep: str | None = None) -> None:
    """
    Delete the oldest complete checkpoints of `output_dir` beyond the newest `save_total_limit` (none when `None`).
    Incomplete folders are not counted and the newest complete checkpoint, the one a resume needs, is always kept, as
    is `keep` (e.g. the best model's checkpoint).
    """
    if not save_total_limit:
        return
    complete = [path.resolve() for _, path in complete_checkpoints(output_dir)]
    protected = set(complete[-1:])
    if keep is not None and Path(keep).resolve() in complete:
        protected.add(Path(keep).resolve())
    excess = len(complete) - max(save_total_limit, len(protected))
    for path in complete:
        if excess <= 0:
            break
        if path not in protected:
            logger.info(f"Deleting {path}: --save_total_limit {save_total_limit}.")
            # The marker goes first: a crash mid-deletion leaves an incomplete folder, never a marked partial one.
            (path / COMPLETE_MARKER).unlink()
            shutil.rmtree(path)
            excess -= 1


def failed_save_message(output_dir: str | os.PathLike, global_step: int, error: BaseException) -> str | None:
    """
    The one-line report of the save of checkpoint `global_step` that failed with `error`: what failed, what is
    intact, what to do. `None` when `error` does not come from writing that checkpoint: not an `OSError`, and no
    folder of it was started.
    """
    folder = Path(output_dir, f"{PREFIX_CHECKPOINT_DIR}-{global_step}")
    if not (isinstance(error, OSError) or folder.is_dir()):
        return None
    newest = newest_complete_checkpoint(output_dir)
    intact = f"the last complete checkpoint, {newest}, is intact" if newest else "no complete checkpoint exists yet"
    return (
        f"saving {PREFIX_CHECKPOINT_DIR}-{global_step} in {output_dir} failed ({type(error).__name__}: {error}); "
        f"{intact}. Free disk space or make --output_dir writable, then run the same command again to resume."
    )


class CompleteCheckpointCallback(TrainerCallback):
    """
    Marks each checkpoint complete once every process has saved its part, and rotates checkpoints only after that
    (resuming reads only marked checkpoints, see [`resolve_resume_checkpoint`]).

    - `on_save` (the Trainer calls it after writing `checkpoint-N/` on every process): waits for every process, then
      the saving process writes the completeness marker and deletes the oldest complete checkpoints beyond
      `save_total_limit`, never the newest complete one.
    - `on_train_begin`: checkpoints of steps after the one training starts from belong to a run that went further;
      they stop being resumable (see [`retire_checkpoints_after`]).

    The Trainer's own `--save_total_limit` deletes old checkpoints before this callback can mark the new one, so a
    crash in between would leave none complete: it is refused; give the limit to this callback instead.

    Args:
        save_total_limit (`int`, *optional*): Keep at most this many complete checkpoints (all by default).
    """

    def __init__(self, save_total_limit: int | None = None):
        if save_total_limit is not None and not (isinstance(save_total_limit, int) and save_total_limit >= 1):
            raise ValueError(f"--save_total_limit must be a whole number >= 1 (got {save_total_limit!r}).")
        self.save_total_limit = save_total_limit

    def on_init_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs):
        if args.save_total_limit:
            raise ValueError(
                f"TrainingArguments.save_total_limit={args.save_total_limit} would let the Trainer delete old "
                "checkpoints before the new one is marked complete: set it to None and pass "
                "CompleteCheckpointCallback(save_total_limit=...) instead (run_mlm.py does this for you)."
            )

    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs):
        if args.should_save:
            retire_checkpoints_after(args.output_dir, state.global_step)

    def on_save(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs):
        # Every process writes part of a checkpoint (its RNG state at least; DeepSpeed its shards).
        PartialState().wait_for_everyone()
        if args.should_save:
            mark_complete(Path(args.output_dir, f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"), state.global_step)
            rotate_checkpoints(args.output_dir, self.save_total_limit, keep=state.best_model_checkpoint)


class ShardCheckpointCallback(TrainerCallback):
    """
    Sets `should_save` at the end of every `num_epochs_between_checkpoints`-th shard (the seed's epochs). The
    Trainer then writes a full checkpoint: model, optimizer, scheduler, RNG states, and `trainer_state.json`, which
    carries the budget used (see [`~trainer_callbacks.BudgetCallback`]). Run the Trainer with `--save_strategy no`;
    the budget callback saves the last checkpoint when the budget is spent.

    The count is of completed shards: the first checkpoint comes after `num_epochs_between_checkpoints` shards. (The
    seed saves after the shard of 0-based index `i` when `i > 0 and i % n == 0`, one shard later.)

    Args:
        steps_per_shard (`int`): Optimizer steps per shard of the prepared data.
        num_epochs_between_checkpoints (`int`): Shards between checkpoints.
    """

    def __init__(self, steps_per_shard: int, num_epochs_between_checkpoints: int):
        check_steps_per_shard(steps_per_shard)
        if not (isinstance(num_epochs_between_checkpoints, int) and num_epochs_between_checkpoints >= 1):
            raise ValueError(
                "--num_epochs_between_checkpoints must be a whole number of shards >= 1 "
                f"(got {num_epochs_between_checkpoints!r}); leave the callback out to save only at the end."
            )
        self.steps_per_shard = steps_per_shard
        self.num_epochs_between_checkpoints = num_epochs_between_checkpoints

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs):
        shards = completed_shards(state.global_step, self.steps_per_shard)
        if shards is not None and shards % self.num_epochs_between_checkpoints == 0:
            control.should_save = True
        return control
