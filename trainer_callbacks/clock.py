"""The budget clock: the one source of truth for how much of the wall-clock budget a run has used."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence

import torch
import torch.distributed as dist

from transformers.utils import logging


logger = logging.get_logger(__name__)

TICKS_PER_SECOND = 1_000_000
"""The clock reads whole microseconds, so that a recorded schedule (`trainer_callbacks.schedule_record`) holds every
reading exactly, as an integer, and a replay reproduces it to the bit."""


def whole_ticks(seconds: float) -> int:
    """`seconds` in whole [`TICKS_PER_SECOND`], rounded: how a reading is recorded."""
    return round(seconds * TICKS_PER_SECOND)


def ticks_to_seconds(ticks: int) -> float:
    """The reading of `ticks` whole microseconds (the exact inverse of [`whole_ticks`] on a reading)."""
    return ticks / TICKS_PER_SECOND


def _reading(seconds: float) -> float:
    return ticks_to_seconds(whole_ticks(seconds))


class BudgetClock:
    """
    Wall-clock budget of a training run, carried across resumes.

    The clock separates *measuring* time from *reading* it. [`~BudgetClock.measure`] asks the time source;
    [`~BudgetClock.tick`] takes one measurement as the clock's reading, and [`~BudgetClock.elapsed`],
    [`~BudgetClock.fraction`] and [`~BudgetClock.remaining`] return that reading. The budget callback ticks once
    per optimizer step, so every time-aware piece (stop decision, learning rate, validation stage, snapshot markers)
    sees the same time within a step. With several processes, `tick()` adopts the main process's measurement on
    every rank, so all ranks take the same time-based decisions at the same step and apply the same learning rate.

    The tick is also where the processes agree on an interruption: [`~BudgetClock.request_interrupt`] (a signal on
    one process, say) is seen by every process at the same tick, as [`~BudgetClock.interrupted`]. Time and
    interruption travel in one collective per step.

    Readings are whole microseconds ([`TICKS_PER_SECOND`]). [`~BudgetClock.steps`] counts the ticks (optimizer steps),
    earlier runs included; the saved state carries it and the last reading, so a resumed run's first step reads what
    the saved run read at its last step, as an uninterrupted run would ([`ReplayClock`] relies on it).

    Args:
        budget_seconds (`float`):
            The total training budget, in seconds (> 0). `fraction` is measured against it.
        time_fn (`Callable[[], float]`, *optional*, defaults to `time.monotonic`):
            Source of time in seconds. Tests inject a [`ManualTime`] to simulate long runs instantly.
        elapsed_before (`float`, *optional*, defaults to 0.0):
            Seconds of budget already used by earlier runs (resuming).
    """

    def __init__(
        self, budget_seconds: float, time_fn: Callable[[], float] = time.monotonic, elapsed_before: float = 0.0
    ):
        self.budget_seconds = float(budget_seconds)
        self.time_fn = time_fn
        self._elapsed_before = float(elapsed_before)
        self._started_at: float | None = None
        self._reading = _reading(self._elapsed_before)
        self.steps = 0
        self._interrupt_requested = False
        self._interrupted = False

    @property
    def started(self) -> bool:
        """Whether the clock is running."""
        return self._started_at is not None

    def start(self) -> None:
        """Start (or restart after [`~BudgetClock.stop`]) counting from the seconds already used."""
        self._started_at = self.time_fn()
        self._interrupt_requested = False
        self._interrupted = False

    def stop(self) -> None:
        """Stop counting; the seconds used so far are kept and counting resumes on the next `start()`."""
        self._elapsed_before = self.measure()
        self._reading = _reading(self._elapsed_before)
        self._started_at = None

    def measure(self) -> float:
        """Seconds of budget used up to now (earlier runs included), measured on this process, without ticking."""
        if self._started_at is None:
            return self._elapsed_before
        return self._elapsed_before + (self.time_fn() - self._started_at)

    def tick(self) -> float:
        """
        Take the current measurement as the clock's reading and return it; [`~BudgetClock.interrupted`] becomes
        true at the first tick after any process called [`~BudgetClock.request_interrupt`].

        When `torch.distributed` is initialised with more than one process this is a collective call: every rank
        must call it at the same point, and all ranks adopt the main process's measurement.
        """
        self._reading, interrupt = main_value_and_any_flag(self._next_reading(), self._interrupt_requested)
        self._interrupted = self._interrupted or interrupt
        self.steps += 1
        return self._reading

    def _next_reading(self) -> float:
        return _reading(self.measure())

    def request_interrupt(self) -> None:
        """
        Ask every process to interrupt training at the next tick (a preemption signal, say). It only sets a flag, so
        a signal handler may call it.
        """
        self._interrupt_requested = True

    @property
    def interrupted(self) -> bool:
        """Whether training is interrupted: some process requested it before the last tick (this run)."""
        return self._interrupted

    @property
    def elapsed(self) -> float:
        """Seconds of budget used, as of the last `tick()` (or `start()`)."""
        return self._reading

    @property
    def fraction(self) -> float:
        """Fraction of the budget used as of the last tick; may exceed 1.0 at the step that crosses the budget."""
        return self._reading / self.budget_seconds

    @property
    def remaining(self) -> float:
        """Seconds of budget left as of the last tick, never negative."""
        return max(0.0, self.budget_seconds - self._reading)

    def state_dict(self) -> dict[str, float]:
        """
        The clock's state: seconds used up to now (measured, so that the time since the last tick counts too), the
        budget, the last reading and the steps ticked.
        """
        return {
            "elapsed_seconds": self.measure(),
            "budget_seconds": self.budget_seconds,
            "reading_seconds": self._reading,
            "steps": self.steps,
        }

    @classmethod
    def from_state_dict(
        cls, state_dict: Mapping[str, float], time_fn: Callable[[], float] = time.monotonic
    ) -> BudgetClock:
        """A stopped clock that continues a saved state ([`~BudgetClock.state_dict`]): its budget and seconds used."""
        clock = cls(state_dict["budget_seconds"], time_fn=time_fn)
        clock.load_state_dict(state_dict)
        return clock

    def load_state_dict(self, state_dict: dict[str, float]) -> None:
        """
        Continue from a saved state: the saved seconds become the seconds already used, the reading is the saved
        one until the next tick, and the clock is stopped until the next `start()`. The budget given to this clock is
        kept: a changed `--total_training_time` applies to the resumed run, with a warning. (A state saved before
        readings and steps were recorded reads its seconds used, at step 0.)
        """
        saved_budget = state_dict.get("budget_seconds")
        if saved_budget is not None and saved_budget != self.budget_seconds:
            logger.warning(
                f"The saved run had a budget of {saved_budget / 3600:.4g} h; this run's budget is "
                f"{self.budget_seconds / 3600:.4g} h and applies from now on."
            )
        self._elapsed_before = float(state_dict["elapsed_seconds"])
        self._reading = _reading(state_dict.get("reading_seconds", self._elapsed_before))
        self.steps = int(state_dict.get("steps", 0))
        self._started_at = None


class ReplayClock(BudgetClock):
    """
    A budget clock that replays a recorded schedule: after optimizer step `n` it reads what a recorded run's clock
    read after its step `n`, whatever the time now. Every callback that reads a clock takes, at step `n`, the decision
    the recorded run took: the same learning rate, validations, snapshot markers and stop, on any hardware.

    Time is still measured, and decides nothing: [`~ReplayClock.wall_seconds`] is the real time this replay has run,
    carried across resumes. Interrupting works as on a [`BudgetClock`]; so does resuming, from a checkpoint of the
    replay or of the recorded run (its saved step must lie in the record, and its saved reading must be the recorded
    one: a checkpoint of another run is refused).

    Args:
        budget_seconds (`float`): The recorded run's budget.
        readings (`Sequence[float]`): `readings[i]` is the budget seconds used after step `first_step + i` (the
            reading at the start for `i == 0`), in whole microseconds as a [`BudgetClock`] reads them.
        first_step (`int`, *optional*, defaults to 0): The step of `readings[0]`.
        time_fn (`Callable[[], float]`, *optional*, defaults to `time.monotonic`): Source of the real time.
    """

    def __init__(
        self,
        budget_seconds: float,
        readings: Sequence[float],
        first_step: int = 0,
        time_fn: Callable[[], float] = time.monotonic,
    ):
        if not readings:
            raise ValueError("A ReplayClock needs at least the reading at its first step.")
        super().__init__(budget_seconds, time_fn=time_fn, elapsed_before=readings[0])
        self.readings = list(readings)
        self.first_step = first_step
        self.steps = first_step
        self._wall_before = 0.0

    @property
    def last_step(self) -> int:
        """The last step of the record."""
        return self.first_step + len(self.readings) - 1

    def recorded(self, step: int) -> float:
        """The recorded reading after `step`; a `ValueError` for a step outside the record."""
        if not self.first_step <= step <= self.last_step:
            raise ValueError(
                f"Step {step} is outside the replayed schedule, which records steps {self.first_step} to "
                f"{self.last_step}."
            )
        return self.readings[step - self.first_step]

    @property
    def wall_seconds(self) -> float:
        """Real seconds this replay has run, earlier runs of it included (measured, not recorded)."""
        if self._started_at is None:
            return self._wall_before
        return self._wall_before + (self.time_fn() - self._started_at)

    def measure(self) -> float:
        """The budget seconds used: the recorded reading at the current step (time is not measured)."""
        return self._reading

    def stop(self) -> None:
        self._wall_before = self.wall_seconds
        super().stop()

    def _next_reading(self) -> float:
        return self.recorded(self.steps + 1)

    def state_dict(self) -> dict[str, float]:
        """The [`BudgetClock`] state, with the recorded seconds as the seconds used, and the real seconds run."""
        return {**super().state_dict(), "wall_seconds": self.wall_seconds}

    def load_state_dict(self, state_dict: dict[str, float]) -> None:
        """Continue at the saved step, reading the recorded time there; refuses a state the record does not match."""
        if "steps" not in state_dict:
            raise ValueError(
                "The checkpoint's budget clock has no step count (it was saved before schedules were recorded): "
                "a replay cannot resume from it."
            )
        super().load_state_dict(state_dict)
        recorded = self.recorded(self.steps)
        if whole_ticks(self._reading) != whole_ticks(recorded):
            raise ValueError(
                f"The checkpoint's budget clock read {self._reading:.6f} s at step {self.steps}, the replayed schedule "
                f"{recorded:.6f} s: the checkpoint is from another run. Resume from a checkpoint of the replay or of "
                "the recorded run."
            )
        self._wall_before = float(state_dict.get("wall_seconds", 0.0))


class ManualTime:
    """
    A time source that only moves when told to: pass it as `BudgetClock(time_fn=...)` to simulate a 24-hour run in
    milliseconds (tests, dry runs of a schedule).

    Args:
        now (`float`, *optional*, defaults to 0.0): The starting time in seconds.
    """

    def __init__(self, now: float = 0.0):
        self.now = float(now)

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        """Move the time forward by `seconds`."""
        if seconds < 0:
            raise ValueError(f"Time only moves forward (got {seconds} s).")
        self.now += seconds


def main_value_and_any_flag(value: float, flag: bool) -> tuple[float, bool]:
    """
    Rank 0's `value`, and whether `flag` is set on any rank, on every rank when `torch.distributed` is initialised
    with several processes (a collective call: one all-reduce); `(value, flag)` itself otherwise.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return value, flag
    # NCCL only moves CUDA tensors; gloo and the CPU backends take CPU tensors.
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"
    # Under MAX, -inf from every other rank leaves rank 0's value, and the flags combine as "any".
    main_value = value if dist.get_rank() == 0 else -math.inf
    tensor = torch.tensor([main_value, float(flag)], dtype=torch.float64, device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return tensor[0].item(), bool(tensor[1].item())
