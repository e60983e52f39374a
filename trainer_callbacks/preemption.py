"""Stopping cleanly, with a checkpoint, when a scheduler preempts the job (SIGTERM) or a user presses Ctrl-C."""

import os
import signal
import threading
from collections.abc import Sequence

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments
from transformers.utils import logging

from trainer_callbacks.clock import BudgetClock


logger = logging.get_logger(__name__)


class PreemptionCallback(TrainerCallback):
    """
    Turns SIGTERM and SIGINT during training into a clean stop: the current optimizer step finishes, a training
    checkpoint (with the budget used so far) is saved, and training ends. A second signal exits at once.

    SLURM and similar schedulers send SIGTERM some seconds before they kill a preempted or timed-out job (SLURM:
    `KillWait`, or `#SBATCH --signal=TERM@120` to be warned earlier; under torchrun the agent passes SIGTERM on to
    the workers and kills them 30 s later). SLURM signals every process of the job, launcher and workers alike, so a
    worker may get the same preemption twice, once from SLURM and once from its launcher: a signal within
    `repeat_after_seconds` of the first is taken as the same request. The handler only asks the clock to interrupt
    ([`~trainer_callbacks.clock.BudgetClock.request_interrupt`]); the next tick shares the request with every
    process, so all of them stop at the same step and save the same checkpoint, even when only one received the
    signal. After `trainer.train()` returns, [`~trainer_callbacks.clock.BudgetClock.interrupted`] tells a preempted
    run from a finished one (a script can then exit with a code of its own and print how to resume; `run_mlm.py`
    exits with 75, `EX_TEMPFAIL`). A preempted run takes no final evaluation and no `end` snapshot: the resumed run
    does.

    The handlers are installed on train begin, only in the main thread (Python delivers signals there), and the
    previous ones are restored on train end.

    Args:
        clock (`BudgetClock`): The run's clock, ticked by [`~trainer_callbacks.BudgetCallback`].
        signals (`Sequence[int]`, *optional*, defaults to `(SIGTERM, SIGINT)`): The signals that stop training.
        repeat_after_seconds (`float`, *optional*, defaults to 2.0): How long after the first signal (by the clock's
            `time_fn`) another one exits at once; an earlier one is the same preemption, passed on by a launcher.
    """

    def __init__(
        self,
        clock: BudgetClock,
        signals: Sequence[int] = (signal.SIGTERM, signal.SIGINT),
        repeat_after_seconds: float = 2.0,
    ):
        self.clock = clock
        self.signals = tuple(signals)
        self.repeat_after_seconds = repeat_after_seconds
        self.received: int | None = None
        self._received_at = 0.0
        self._previous_handlers: dict[int, object] = {}

    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs):
        self.received = None
        if threading.current_thread() is not threading.main_thread():
            logger.warning("Training runs outside the main thread: SIGTERM and SIGINT will not stop it cleanly.")
            return
        for signum in self.signals:
            self._previous_handlers[signum] = signal.signal(signum, self._handle)

    def _handle(self, signum: int, frame) -> None:
        now = self.clock.time_fn()
        if self.received is not None:
            if now - self._received_at < self.repeat_after_seconds:
                return
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        self.received, self._received_at = signum, now
        self.clock.request_interrupt()
        logger.warning(
            f"Received {signal.Signals(signum).name}: finishing the current step, saving a checkpoint, then exiting. "
            f"Send it again (after {self.repeat_after_seconds:g} s) to exit at once."
        )

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs):
        if self.clock.interrupted:
            control.should_training_stop = True
            control.should_save = True
            logger.warning(f"Interrupted at step {state.global_step}: saving a checkpoint and stopping.")
        return control

    def on_train_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs):
        self.restore_signal_handlers()

    def restore_signal_handlers(self) -> None:
        """Put back the handlers found on train begin (done on train end; call it when training raised)."""
        for signum, handler in self._previous_handlers.items():
            signal.signal(signum, handler)
        self._previous_handlers = {}
