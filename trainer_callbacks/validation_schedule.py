"""When to validate during pretraining: every few shards, more often at the start and the end of the budget."""

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from trainer_callbacks.clock import BudgetClock
from trainer_callbacks.shards import completed_shards


class ValidationScheduleCallback(TrainerCallback):
    """
    Sets `should_evaluate` at the end of every `validation_epochs`-th shard, every `validation_epochs_begin`-th
    while less than `validation_begin_proportion` of the budget is used, every `validation_epochs_end`-th once more
    than `1 - validation_end_proportion` is used, and once when training stops (budget spent or `max_steps`; not
    when it is interrupted, see [`~trainer_callbacks.PreemptionCallback`]).

    A shard is the seed's "epoch": `steps_per_shard` optimizer steps. The count is of completed shards, so the
    first validation in the middle stage comes after `validation_epochs` shards. (The seed tests the 0-based index
    of the finished shard, `index % validation_epochs == 0`, which also validates after the very first shard.)

    Run the Trainer with `--eval_strategy no`: this callback decides when to evaluate.

    Args:
        clock (`BudgetClock`): The run's clock, ticked by [`~trainer_callbacks.BudgetCallback`].
        steps_per_shard (`int`): Optimizer steps per shard of the prepared data.
        validation_epochs (`int`, *optional*, defaults to 3): Shards between validations in the middle stage.
        validation_epochs_begin (`int`, *optional*, defaults to 1): Shards between validations at the start.
        validation_epochs_end (`int`, *optional*, defaults to 1): Shards between validations at the end.
        validation_begin_proportion (`float`, *optional*, defaults to 0.1): Fraction of the budget that is "start".
        validation_end_proportion (`float`, *optional*, defaults to 0.1): Fraction of the budget that is "end".
    """

    def __init__(
        self,
        clock: BudgetClock,
        steps_per_shard: int,
        validation_epochs: int = 3,
        validation_epochs_begin: int = 1,
        validation_epochs_end: int = 1,
        validation_begin_proportion: float = 0.1,
        validation_end_proportion: float = 0.1,
    ):
        self.clock = clock
        self.steps_per_shard = steps_per_shard
        self.validation_epochs = validation_epochs
        self.validation_epochs_begin = validation_epochs_begin
        self.validation_epochs_end = validation_epochs_end
        self.validation_begin_proportion = validation_begin_proportion
        self.validation_end_proportion = validation_end_proportion

    def shards_between_validations(self, fraction: float) -> int:
        """The validation interval, in shards, when `fraction` of the budget is used."""
        if fraction < self.validation_begin_proportion:
            return self.validation_epochs_begin
        if fraction > 1 - self.validation_end_proportion:
            return self.validation_epochs_end
        return self.validation_epochs

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs):
        shards = completed_shards(state.global_step, self.steps_per_shard)
        if shards is not None and shards % self.shards_between_validations(self.clock.fraction) == 0:
            control.should_evaluate = True
        # Not when interrupted: a preempted job has seconds to save its checkpoint, and the resumed run validates.
        if control.should_training_stop and not self.clock.interrupted:
            control.should_evaluate = True
        return control
