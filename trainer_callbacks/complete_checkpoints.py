"""Training checkpoints that a crash cannot leave half-written and resumable, or delete while they are needed."""

from pathlib import Path

from accelerate import PartialState
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from budget_bert.checkpointing import mark_complete, retire_checkpoints_after, rotate_checkpoints


class CompleteCheckpointCallback(TrainerCallback):
    """
    Marks each checkpoint complete once every process has saved its part, and rotates checkpoints only after that
    (see [`budget_bert.checkpointing`]: resuming reads only marked checkpoints).

    - `on_save` (the Trainer calls it after writing `checkpoint-N/` on every process): waits for every process, then
      the saving process writes the completeness marker and deletes the oldest complete checkpoints beyond
      `save_total_limit`, never the newest complete one.
    - `on_train_begin`: checkpoints of steps after the one training starts from belong to a run that went further;
      they stop being resumable (see [`~budget_bert.checkpointing.retire_checkpoints_after`]).

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
