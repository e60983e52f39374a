"""Stopping a run that is not worth its budget: eval loss too high too late, or a diverged (NaN/inf) loss."""

import math

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments
from transformers.utils import logging

from trainer_callbacks.clock import BudgetClock


logger = logging.get_logger(__name__)


class BudgetEarlyStoppingCallback(TrainerCallback):
    """
    Stops training (`should_training_stop`) when

    - an evaluation after `after_seconds` of budget reports an eval loss above `max_eval_loss`
      (checked at every such evaluation, as the seed does after each of its epochs);
    - an evaluation reports a NaN or infinite eval loss;
    - a training log reports a NaN or infinite `loss`; then it also sets `should_save`, so that the diverged state
      can be examined. That checkpoint holds the diverged weights: resume from an earlier one.

    The Trainer's `logging_nan_inf_filter` (on by default) replaces NaN and inf losses in the logs with the mean of
    the recent finite ones and leaves them out of the eval loss, which would hide a divergence from this callback:
    run with `--logging_nan_inf_filter false`. Training refuses to start otherwise.

    Args:
        clock (`BudgetClock`): The run's clock, ticked by [`~trainer_callbacks.BudgetCallback`].
        after_seconds (`float`, *optional*, defaults to 10800): Seconds of budget after which the eval loss must be
            at most `max_eval_loss` (the seed's `--early_stop_time`, 180 minutes).
        max_eval_loss (`float`, *optional*, defaults to 6.0): The highest acceptable eval loss after
            `after_seconds` (the seed's `--early_stop_eval_loss`); `math.inf` keeps only the NaN/inf checks.
    """

    def __init__(self, clock: BudgetClock, after_seconds: float = 10800.0, max_eval_loss: float = 6.0):
        self.clock = clock
        self.after_seconds = after_seconds
        self.max_eval_loss = max_eval_loss

    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs):
        if args.logging_nan_inf_filter:
            raise ValueError(
                "Early stopping watches for NaN and inf losses, which --logging_nan_inf_filter (on by default) hides "
                "from the logs: run with --logging_nan_inf_filter false."
            )

    def on_evaluate(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, metrics=None, **kwargs
    ):
        eval_loss = (metrics or {}).get("eval_loss")
        if eval_loss is None:
            return control
        if not math.isfinite(eval_loss):
            control.should_training_stop = True
            logger.warning(f"Eval loss is {eval_loss} at step {state.global_step}: the run diverged; stopping.")
        elif self.clock.elapsed >= self.after_seconds and eval_loss > self.max_eval_loss:
            control.should_training_stop = True
            logger.warning(
                f"Eval loss {eval_loss:.4g} is above {self.max_eval_loss} after {self.clock.elapsed / 60:.4g} "
                f"minutes of budget (the limit applies from {self.after_seconds / 60:.4g} minutes); stopping."
            )
        return control

    def on_log(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, logs=None, **kwargs):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(loss):
            control.should_training_stop = True
            control.should_save = True
            logger.error(
                f"Training loss is {loss} at step {state.global_step}: the run diverged. Stopping and saving a "
                "checkpoint of the diverged state; resume from an earlier checkpoint."
            )
        return control
