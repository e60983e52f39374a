"""Ending training when the wall-clock budget is spent, and carrying the budget across resumes."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from transformers import TrainerControl, TrainerState, TrainingArguments
from transformers.trainer_callback import ExportableState
from transformers.utils import logging

from trainer_callbacks.clock import BudgetClock, ReplayClock
from trainer_callbacks.exported_state import RestoresOwnState, restore_exported_attributes, saved_attributes


logger = logging.get_logger(__name__)


class BudgetCallback(RestoresOwnState, ExportableState):
    """
    Owns the budget clock during training: starts it on train begin, ticks it once per optimizer step, and at the
    first step whose reading is past the stop time sets `should_training_stop` and `should_save`.

    The decision is taken in `on_optimizer_step`, before any `on_step_end`, so that the callbacks acting "at the end"
    (final validation, snapshots) see it whatever their order. With several processes the clock's tick adopts rank
    0's time on every rank, so every rank stops at the same step.

    The clock runs from train begin to train end, so evaluations and checkpoint writing count against the budget;
    process start-up, data preparation and model building before `trainer.train()` do not.

    With a [`~trainer_callbacks.clock.ReplayClock`] the stop comes where it came in the recorded run, since the clock
    reads the recorded time; a record that ends before its run stopped (one saved with a snapshot) stops the replay at
    its last step.

    The seconds used are exported into `trainer_state.json` of every checkpoint (`stateful_callbacks`); when the
    Trainer resumes from a checkpoint, the clock continues from them. Leave
    `--restore_callback_states_from_checkpoint` off: this callback restores itself.

    Args:
        clock (`BudgetClock`):
            The run's clock, shared with every time-aware callback and the learning-rate schedule.
        stop_after_seconds (`float`, *optional*):
            Stop at the first step at or past this many seconds of budget when that is before the end of the budget
            (the seed's `--early_exit_time_marker`). By default training stops at the end of the budget.
    """

    def __init__(self, clock: BudgetClock, stop_after_seconds: float | None = None):
        self.clock = clock
        self.stop_seconds = clock.budget_seconds
        if stop_after_seconds is not None:
            self.stop_seconds = min(self.stop_seconds, stop_after_seconds)

    @classmethod
    def saved_clock(cls, trainer_state: Mapping[str, Any]) -> BudgetClock | None:
        """
        The clock this callback exported into a saved `trainer_state.json` (given as the parsed dict), stopped at the
        seconds used then; `None` for a run trained without this callback.
        """
        attributes = saved_attributes(trainer_state.get("stateful_callbacks", {}), cls)
        return BudgetClock.from_state_dict(attributes) if attributes else None

    def state(self) -> dict:
        return {"args": {}, "attributes": self.clock.state_dict()}

    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs):
        self.clock.load_state_dict(restore_exported_attributes(state, self))
        self.clock.start()
        logger.info(
            f"Budget: {self.clock.budget_seconds / 3600:.4g} h, {self.clock.elapsed / 3600:.4g} h already used, "
            f"{self.clock.remaining / 3600:.4g} h left; training stops after {self.stop_seconds / 3600:.4g} h."
        )

    def on_optimizer_step(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs):
        elapsed = self.clock.tick()
        if control.should_training_stop:
            return control
        if elapsed >= self.stop_seconds:
            control.should_training_stop = True
            control.should_save = True
            logger.info(
                f"Budget spent at step {state.global_step + 1}: {elapsed / 3600:.4g} h used of "
                f"{self.clock.budget_seconds / 3600:.4g} h ({self.clock.remaining / 3600:.4g} h left); stopping "
                "and saving a checkpoint."
            )
        elif isinstance(self.clock, ReplayClock) and self.clock.steps >= self.clock.last_step:
            control.should_training_stop = True
            control.should_save = True
            logger.info(
                f"The replayed schedule ends at step {self.clock.steps}, {elapsed / 3600:.4g} h into the "
                f"{self.clock.budget_seconds / 3600:.4g} h budget; stopping and saving a checkpoint."
            )
        return control

    def on_train_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs):
        self.clock.stop()
