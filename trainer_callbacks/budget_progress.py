"""Progress over the budget rather than over steps: a tqdm bar and budget keys in every log."""

from tqdm.auto import tqdm

from transformers import ProgressCallback, TrainerControl, TrainerState, TrainingArguments
from transformers.utils import logging

from trainer_callbacks.clock import BudgetClock


logger = logging.get_logger(__name__)


def _hours_minutes_seconds(seconds: float) -> str:
    minutes, seconds = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}"


class BudgetProgressCallback(ProgressCallback):
    """
    A [`~transformers.ProgressCallback`] whose bar runs over the budget's seconds instead of steps, showing the time
    used and left, the learning rate, the loss and the tokens per second of the latest training log. It keeps the
    stock evaluation bar and printing of the logs.

    It also adds to every log `budget_elapsed_hours` and `budget_fraction`, and to training logs
    `tokens_per_second` (input tokens since the previous training log over the budget seconds between them; needs
    `--include_num_input_tokens_seen`). The Trainer hands the same `logs` dict to the callbacks after this one, and
    the keys are copied into the matching `state.log_history` entry, so `trainer_state.json` carries them. The
    reporting callbacks that `--report_to` installs (TensorBoard, W&B, ...) come before user callbacks: to give
    them these keys, move them behind this one (`trainer.add_callback(trainer.pop_callback(TensorBoardCallback))`).

    Replace the stock bar, and not this one (it is a `ProgressCallback` too): build the Trainer without this
    callback, then `trainer.remove_callback(ProgressCallback)` and
    `trainer.add_callback(BudgetProgressCallback(clock))`. With `--disable_tqdm` there is no bar (the Trainer's
    `PrinterCallback` prints the logs) and this callback only adds the keys.

    Args:
        clock (`BudgetClock`): The run's clock, ticked by [`~trainer_callbacks.BudgetCallback`].
        max_str_len (`int`, *optional*, defaults to 100): As for `ProgressCallback`.
    """

    def __init__(self, clock: BudgetClock, max_str_len: int = 100):
        super().__init__(max_str_len=max_str_len)
        self.clock = clock
        self._shown: dict[str, float] = {}
        self._previous_log: tuple[float, int] | None = None

    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs):
        if state.is_world_process_zero and not args.disable_tqdm:
            self.training_bar = tqdm(
                total=self.clock.budget_seconds,
                dynamic_ncols=True,
                # tqdm prefixes a postfix with ", ": the text goes into the description, which is shown as is.
                bar_format="budget {percentage:5.1f}%|{bar}| {desc}",
            )
        self._shown = {}
        self._previous_log = None
        if args.include_num_input_tokens_seen == "no":
            logger.warning("tokens_per_second is logged only with --include_num_input_tokens_seen all or non_padding.")

    def on_step_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs):
        # After every on_train_begin: the clock has been restored when resuming.
        if self._previous_log is None:
            self._previous_log = (self.clock.elapsed, state.num_input_tokens_seen)

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs):
        if self.training_bar is None:
            return
        self.training_bar.n = min(self.clock.elapsed, self.clock.budget_seconds)
        shown = [
            f"{_hours_minutes_seconds(self.clock.elapsed)} used",
            f"{_hours_minutes_seconds(self.clock.remaining)} left",
            f"step {state.global_step}",
        ]
        for key, label, spec in (
            ("learning_rate", "lr", ".3g"),
            ("loss", "loss", ".4g"),
            ("tokens_per_second", "tok/s", ",.0f"),
        ):
            if key in self._shown:
                shown.append(f"{label} {self._shown[key]:{spec}}")
        self.training_bar.set_description_str(", ".join(shown), refresh=True)

    def on_log(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, logs=None, **kwargs):
        added = {"budget_elapsed_hours": self.clock.elapsed / 3600, "budget_fraction": self.clock.fraction}
        if "loss" in logs and args.include_num_input_tokens_seen != "no" and self._previous_log is not None:
            previous_elapsed, previous_tokens = self._previous_log
            if self.clock.elapsed > previous_elapsed:
                seconds = self.clock.elapsed - previous_elapsed
                added["tokens_per_second"] = (state.num_input_tokens_seen - previous_tokens) / seconds
            self._previous_log = (self.clock.elapsed, state.num_input_tokens_seen)
        logs.update(added)
        # Trainer.log appended a copy of these logs to log_history just before calling on_log.
        if state.log_history:
            state.log_history[-1].update(added)
        self._shown.update({k: logs[k] for k in ("learning_rate", "loss", "tokens_per_second") if k in logs})
        super().on_log(args, state, control, logs=logs, **kwargs)

    def on_train_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs):
        if self.training_bar is not None:  # none with --disable_tqdm, which the stock callback does not expect
            super().on_train_end(args, state, control, **kwargs)
