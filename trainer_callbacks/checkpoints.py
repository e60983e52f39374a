"""Resumable training checkpoints every few shards."""

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from trainer_callbacks.shards import check_steps_per_shard, completed_shards


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
