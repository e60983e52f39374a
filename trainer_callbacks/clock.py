"""The budget clock: the one source of truth for how much of the wall-clock budget a run has used."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping

import torch
import torch.distributed as dist

from transformers.utils import logging


logger = logging.get_logger(__name__)


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

    Args:
        budget_seconds (`float`):
            The total training budget, in seconds. `fraction` is measured against it.
        time_fn (`Callable[[], float]`, *optional*, defaults to `time.monotonic`):
            Source of time in seconds. Tests inject a [`ManualTime`] to simulate long runs instantly.
        elapsed_before (`float`, *optional*, defaults to 0.0):
            Seconds of budget already used by earlier runs (resuming).
    """

    def __init__(
        self, budget_seconds: float, time_fn: Callable[[], float] = time.monotonic, elapsed_before: float = 0.0
    ):
        problems = []
        if not budget_seconds > 0:
            problems.append(f"the budget must be positive (got {budget_seconds} s): set --total_training_time > 0")
        if not elapsed_before >= 0:
            problems.append(f"elapsed_before must be >= 0 (got {elapsed_before} s)")
        if problems:
            raise ValueError("BudgetClock: " + "; ".join(problems))
        self.budget_seconds = float(budget_seconds)
        self.time_fn = time_fn
        self._elapsed_before = float(elapsed_before)
        self._started_at: float | None = None
        self._reading = self._elapsed_before
        self._interrupt_requested = False
        self._interrupted = False

    @property
    def started(self) -> bool:
        """Whether the clock is running."""
        return self._started_at is not None

    def start(self) -> None:
        """Start (or restart after [`~BudgetClock.stop`]) counting from the seconds already used."""
        self._started_at = self.time_fn()
        self._reading = self._elapsed_before
        self._interrupt_requested = False
        self._interrupted = False

    def stop(self) -> None:
        """Stop counting; the seconds used so far are kept and counting resumes on the next `start()`."""
        self._elapsed_before = self.measure()
        self._reading = self._elapsed_before
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
        self._reading, interrupt = main_value_and_any_flag(self.measure(), self._interrupt_requested)
        self._interrupted = self._interrupted or interrupt
        return self._reading

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
        """The clock's state: seconds used up to now (measured, not the last reading) and the budget."""
        return {"elapsed_seconds": self.measure(), "budget_seconds": self.budget_seconds}

    @classmethod
    def from_state_dict(
        cls, state_dict: Mapping[str, float], time_fn: Callable[[], float] = time.monotonic
    ) -> BudgetClock:
        """A stopped clock that continues a saved state ([`~BudgetClock.state_dict`]): its budget and seconds used."""
        return cls(state_dict["budget_seconds"], time_fn=time_fn, elapsed_before=state_dict["elapsed_seconds"])

    def load_state_dict(self, state_dict: dict[str, float]) -> None:
        """
        Continue from a saved state: the saved seconds become the seconds already used, and the clock is stopped
        until the next `start()`. The budget given to this clock is kept: a changed `--total_training_time` applies
        to the resumed run, with a warning.
        """
        saved_budget = state_dict.get("budget_seconds")
        if saved_budget is not None and saved_budget != self.budget_seconds:
            logger.warning(
                f"The saved run had a budget of {saved_budget / 3600:.4g} h; this run's budget is "
                f"{self.budget_seconds / 3600:.4g} h and applies from now on."
            )
        self._elapsed_before = float(state_dict["elapsed_seconds"])
        self._reading = self._elapsed_before
        self._started_at = None


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
