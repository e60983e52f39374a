"""Training checkpoints a crash cannot leave half-written and resumable: which are complete, which one to resume
from, which may be deleted, and the callbacks that mark, rotate and schedule them.

The stock Trainer writes `checkpoint-N/` in place, file by file and from several processes (DeepSpeed adds its own
sub-folders), so a job killed while saving leaves a folder that looks like a checkpoint and is not one. Writing it
under a temporary name and renaming it would mean replacing the Trainer's private `_save_checkpoint`. Instead, once
every process has written its part, the main process records the folder's files, their sizes and the SHA-256 of
their content in a completeness marker, written to a temporary name, synced and renamed into place
([`mark_complete`]), so that the marker exists whole or not at all, and only after everything it vouches for is on
disk. Resuming reads only marked folders whose content is still what was saved ([`resolve_resume_checkpoint`]),
falling back to an older one otherwise, and an older checkpoint is deleted only after a newer one is marked
([`rotate_checkpoints`]): a crash at any point leaves the previous complete checkpoint in place.
[`CompleteCheckpointCallback`] does the marking and rotating during training; [`ShardCheckpointCallback`] asks for
a checkpoint every few shards.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import struct
import zipfile
from datetime import timedelta
from pathlib import Path

import torch
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR
from transformers.utils import logging

from trainer_callbacks.shards import completed_shards


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


def _sha256(path: Path) -> str:
    with path.open("rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()


def _synced_sha256(path: Path) -> str:
    with path.open("rb") as file:
        digest = hashlib.file_digest(file, "sha256").hexdigest()
        os.fsync(file.fileno())
    return digest


def mark_complete(folder: str | os.PathLike, global_step: int) -> Path:
    """
    Record `folder` as a complete checkpoint of step `global_step`: sync its files to disk, then write the marker
    listing them with their sizes and SHA-256 digests, atomically. Call it on the main process once every process
    has saved its part. Hashing reads the files just written, from the page cache: about a second per GB.
    """
    folder = Path(folder)
    files = _files_and_sizes(folder)
    digests = {name: _synced_sha256(folder / name) for name in files}
    marker = folder / COMPLETE_MARKER
    partial = folder / _PARTIAL_MARKER
    with partial.open("w") as file:
        json.dump({"global_step": global_step, "files": files, "sha256": digests}, file, indent=2)
        file.flush()
        os.fsync(file.fileno())
    os.replace(partial, marker)
    _fsync(folder)  # the rename itself
    return marker


def incompleteness(folder: str | os.PathLike, verify_content: bool = False) -> str | None:
    """
    Why `folder` is not a complete checkpoint (its save was interrupted, or a file changed since), or `None`.

    By default only the files and their sizes are compared with the marker, which is instant. With
    `verify_content` (what a resume checks), also their content: the SHA-256 digests the marker records, or, for a
    marker written before digests were recorded, whether each file still parses (JSON files, the CRCs of torch's
    zip archives, safetensors headers). A checkpoint changed in place, with its sizes kept, fails only this check.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return "no such folder"
    marker = folder / COMPLETE_MARKER
    try:
        record = json.loads(marker.read_text())
        recorded = record["files"]
        digests = record.get("sha256")
        names = list(recorded.items())
        if not isinstance(digests, (dict, type(None))):
            raise TypeError("sha256 is not a mapping")
    except FileNotFoundError:
        return f"no {COMPLETE_MARKER}: its save did not finish"
    except (ValueError, KeyError, TypeError, AttributeError):
        return f"{COMPLETE_MARKER} is unreadable"
    for name, size in names:
        path = folder / name
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != size:
            return f"{name} has {path.stat().st_size} bytes, {size} when the checkpoint was saved"
    if not verify_content:
        return None
    if digests is None:
        return next(filter(None, (_unreadable(folder / name) for name, _ in names)), None)
    for name, _ in names:
        if _sha256(folder / name) != digests.get(name):
            return f"{name} is not what was saved (its SHA-256 differs from the one in {COMPLETE_MARKER})"
    return None


def _unreadable(path: Path) -> str | None:
    """Why the checkpoint file `path` would not load, as far as its format tells without loading it."""
    try:
        if path.suffix == ".json":
            json.loads(path.read_bytes())
        elif path.suffix == ".safetensors":
            with path.open("rb") as file:
                (length,) = struct.unpack("<Q", file.read(8))
                header = json.loads(file.read(length))
            end = max((entry["data_offsets"][1] for key, entry in header.items() if key != "__metadata__"), default=0)
            if 8 + length + end != path.stat().st_size:
                return f"{path.name} is not the size its header says"
        elif zipfile.is_zipfile(path):  # torch.save's format, with a CRC per entry
            with zipfile.ZipFile(path) as archive:
                bad = archive.testzip()
            if bad is not None:
                return f"{path.name}: {bad} fails its CRC check"
    except (ValueError, KeyError, TypeError, IndexError, struct.error, zipfile.BadZipFile, OSError) as error:
        return f"{path.name} does not parse ({type(error).__name__})"
    return None


def complete_checkpoints(output_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    """The complete checkpoints in `output_dir`, as `(step, path)` sorted by step."""
    return [(step, path) for step, path in checkpoint_folders(output_dir) if incompleteness(path) is None]


def newest_complete_checkpoint(
    output_dir: str | os.PathLike, warn: bool = False, verify_content: bool = False
) -> Path | None:
    """
    The complete checkpoint of `output_dir` with the highest step, or `None`. With `warn`, each newer folder that is
    skipped because it is incomplete is named in a warning; `verify_content` checks the content as a resume needs
    (see [`incompleteness`]).
    """
    for _, path in reversed(checkpoint_folders(output_dir)):
        problem = incompleteness(path, verify_content=verify_content)
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
      complete checkpoint in `--output_dir`, skipping incomplete ones and those whose content changed since they
      were saved, with a warning, or a fresh start if there is none. `--overwrite_output_dir` without
      `--resume_from_checkpoint` starts fresh.
    - `--resume_from_checkpoint PATH`: that checkpoint, which must be complete and unchanged.

    Raises `ValueError` naming the flag and the fix when PATH is not a complete checkpoint.
    """
    if resume_from_checkpoint is None and overwrite_output_dir:
        return None
    if resume_from_checkpoint in (None, AUTO):
        newest = newest_complete_checkpoint(output_dir, warn=True, verify_content=True)
        if newest is not None:
            logger.info(f"Resuming from {newest}, the newest complete checkpoint in {output_dir}.")
        elif resume_from_checkpoint == AUTO:
            logger.info(f"No complete checkpoint in {output_dir}: starting fresh.")
        return None if newest is None else str(newest)
    problem = incompleteness(resume_from_checkpoint, verify_content=True)
    if problem is not None:
        newest = newest_complete_checkpoint(Path(resume_from_checkpoint).parent, verify_content=True)
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


class CheckpointSaveError(RuntimeError):
    """Another process could not write its part of the checkpoint being saved: nobody marks it complete."""


# How long a process whose save failed waits to tell the others (see `CompleteCheckpointCallback.report_failed_save`).
_REPORT_SECONDS = 10


class CompleteCheckpointCallback(TrainerCallback):
    """
    Marks each checkpoint complete once every process has saved its part, and rotates checkpoints only after that
    (resuming reads only marked checkpoints, see [`resolve_resume_checkpoint`]).

    - `on_save` (the Trainer calls it after writing `checkpoint-N/` on every process): waits for every process, then
      the saving process writes the completeness marker and deletes the oldest complete checkpoints beyond
      `save_total_limit`, never the newest complete one.
    - `on_train_begin`: checkpoints of steps after the one training starts from belong to a run that went further;
      they stop being resumable (see [`retire_checkpoints_after`]).

    With several processes, the wait is an agreement on a CPU (gloo) group of its own: a process whose part of
    the checkpoint failed to write calls [`~CompleteCheckpointCallback.report_failed_save`] before it exits, and
    every other process then raises [`CheckpointSaveError`] at once, instead of waiting at a barrier until the
    distributed timeout (NCCL does not notice a peer that is gone). A failure inside DeepSpeed's own save, whose
    barriers this callback cannot reach, still ends only when the launcher stops the others.

    The Trainer's own `--save_total_limit` deletes old checkpoints before this callback can mark the new one, so a
    crash in between would leave none complete: it is refused; give the limit to this callback instead.

    Args:
        save_total_limit (`int`, *optional*): Keep at most this many complete checkpoints (all by default).
    """

    def __init__(self, save_total_limit: int | None = None):
        self.save_total_limit = save_total_limit
        self._group = None

    def on_init_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs):
        if args.save_total_limit:
            raise ValueError(
                f"TrainingArguments.save_total_limit={args.save_total_limit} would let the Trainer delete old "
                "checkpoints before the new one is marked complete: set it to None and pass "
                "CompleteCheckpointCallback(save_total_limit=...) instead (run_mlm.py does this for you)."
            )

    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs):
        self._group = None
        if _distributed():
            # Every process calls on_train_begin, in the same order as any other group creation.
            gloo = torch.distributed.get_backend() == "gloo"
            self._group = torch.distributed.group.WORLD if gloo else torch.distributed.new_group(backend="gloo")
        if args.should_save:
            retire_checkpoints_after(args.output_dir, state.global_step)

    def on_save(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs):
        # Every process writes part of a checkpoint (its RNG state at least; DeepSpeed its shards).
        if self._agree(failed=False):
            raise CheckpointSaveError("another process could not write its part (its own error says why)")
        if args.should_save:
            mark_complete(Path(args.output_dir, f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"), state.global_step)
            rotate_checkpoints(args.output_dir, self.save_total_limit, keep=state.best_model_checkpoint)

    def report_failed_save(self) -> None:
        """
        Tell the other processes that this one could not write its part of the checkpoint being saved, so that they
        stop now. Call it where the save's error is caught, before exiting; it waits a few seconds at most.
        """
        self._agree(failed=True)

    def _agree(self, failed: bool) -> bool:
        """Whether any process failed its save; with several processes, waits for each one's answer."""
        if self._group is None:
            return failed
        flag = torch.tensor([int(failed)])
        work = torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX, group=self._group, async_op=True)
        if not failed:
            work.wait()
            return bool(flag.item())
        try:  # the others may be somewhere else than on_save (a DeepSpeed barrier): do not wait for them for long
            work.wait(timedelta(seconds=_REPORT_SECONDS))
        except RuntimeError:
            logger.warning("The other processes did not take the failed save's report; exiting anyway.")
        return True


def _distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


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
        self.steps_per_shard = steps_per_shard
        self.num_epochs_between_checkpoints = num_epochs_between_checkpoints

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs):
        shards = completed_shards(state.global_step, self.steps_per_shard)
        if shards is not None and shards % self.num_epochs_between_checkpoints == 0:
            control.should_save = True
        return control
