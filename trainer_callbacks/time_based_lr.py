"""The time-based learning rate: the stock Trainer's own scheduler, with a factor read from the budget clock."""

import warnings

from torch.optim.lr_scheduler import LambdaLR

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments
from transformers.trainer_utils import SchedulerType

from trainer_callbacks.clock import BudgetClock
from trainer_callbacks.lr_curves import DEFAULT_COOLDOWN_PROPORTION, DEFAULT_COOLDOWN_SHAPE, lr_factor


class TimeBasedLRCallback(TrainerCallback):
    """
    Makes the learning rate a function of the budget used: `learning_rate * lr_factor(clock.fraction, ...)`.

    The Trainer runs with `--lr_scheduler_type constant`, a `LambdaLR`. On train begin this callback replaces that
    scheduler's factor with one that reads the clock, so the scheduler the Trainer already steps and logs carries the
    time-based rate (under DeepSpeed too, as long as the DeepSpeed config names no scheduler). The Trainer reads
    `get_last_lr()` after `optimizer.step()` and before `lr_scheduler.step()`, so the logged rate is the one the
    optimizer applied. `lr_scheduler.step()` after step `k` reads the clock as ticked at step `k` (see
    [`~trainer_callbacks.BudgetCallback`]): step `k + 1` runs at the rate of the budget used when step `k` ended.
    Before the first step, the rate is set from the clock's reading at the start (restored when resuming), so a fresh
    run starts in warmup.

    `--lr_schedule step` means: do not add this callback.

    Args:
        clock (`BudgetClock`): The run's clock, ticked by [`~trainer_callbacks.BudgetCallback`].
        warmup_proportion (`float`, *optional*, defaults to 0.06): Fraction of the budget spent warming up.
        curve (`str`, *optional*, defaults to `"linear"`): `"linear"`, `"exp"` or `"wsd"`, see
            [`~trainer_callbacks.lr_curves.lr_factor`].
        decay_rate (`float`, *optional*, defaults to 0.99): Exp curve: multiplier per `decay_interval`.
        decay_interval (`float`, *optional*, defaults to 1.0): Exp curve: fraction of the budget per `decay_rate`
            multiplication (the seed's `--decay_step` hours divided by `--total_training_time`).
        cooldown_proportion (`float`, *optional*, defaults to 0.2): Wsd curve: fraction of the budget, at its end,
            over which the rate cools down from its peak to 0.
        cooldown_shape (`str`, *optional*, defaults to `"1-sqrt"`): Wsd curve: `"linear"`, `"1-sqrt"` or
            `"cosine"`, see [`~trainer_callbacks.lr_curves.cooldown_factor`].
    """

    def __init__(
        self,
        clock: BudgetClock,
        warmup_proportion: float = 0.06,
        curve: str = "linear",
        decay_rate: float = 0.99,
        decay_interval: float = 1.0,
        cooldown_proportion: float = DEFAULT_COOLDOWN_PROPORTION,
        cooldown_shape: str = DEFAULT_COOLDOWN_SHAPE,
    ):
        self.clock = clock
        self.warmup_proportion = warmup_proportion
        self.curve = curve
        self.decay_rate = decay_rate
        self.decay_interval = decay_interval
        self.cooldown_proportion = cooldown_proportion
        self.cooldown_shape = cooldown_shape
        self._scheduler_to_refresh: LambdaLR | None = None

    def factor(self) -> float:
        """The learning-rate factor at the clock's current reading."""
        return lr_factor(
            self.clock.fraction,
            self.warmup_proportion,
            self.curve,
            decay_rate=self.decay_rate,
            decay_interval=self.decay_interval,
            cooldown_proportion=self.cooldown_proportion,
            cooldown_shape=self.cooldown_shape,
        )

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, lr_scheduler=None, **kwargs
    ):
        problems = []
        if args.lr_scheduler_type != SchedulerType.CONSTANT:
            problems.append(
                f"--lr_scheduler_type is {args.lr_scheduler_type.value}: use constant (the time-based factor "
                "replaces it), or --lr_schedule step without this callback"
            )
        if args.warmup_steps:
            problems.append(
                f"--warmup_steps {args.warmup_steps} is ignored by a time-based schedule: use --warmup_proportion"
            )
        if not isinstance(lr_scheduler, LambdaLR):
            problems.append(
                f"the Trainer's scheduler is a {type(lr_scheduler).__name__}, not a LambdaLR: with DeepSpeed, remove "
                "the 'scheduler' block from the DeepSpeed config so that the Trainer builds its own"
            )
        if problems:
            raise ValueError("The time-based learning rate cannot run: " + "; ".join(problems) + ".")

        # A plain function: LambdaLR.state_dict() skips functions, so checkpoints do not try to pickle the clock.
        def clock_factor(_step: int) -> float:
            return self.factor()

        lr_scheduler.lr_lambdas = [clock_factor] * len(lr_scheduler.lr_lambdas)
        # The clock may still be restored by the budget callback's on_train_begin: set the first rate at step begin.
        self._scheduler_to_refresh = lr_scheduler

    def on_step_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs):
        if self._scheduler_to_refresh is None:
            return
        # One extra scheduler step evaluates the new factor and sets both the optimizer's rate and get_last_lr().
        # It advances only the scheduler's step counter, which the factor ignores. torch warns about a first
        # scheduler step before the first optimizer step, which is exactly what this is meant to be.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler\.step\(\)` before")
            self._scheduler_to_refresh.step()
        self._scheduler_to_refresh = None
