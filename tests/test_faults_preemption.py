"""Signals as a cluster sends them: SLURM signals every process, and launchers pass the signal on to their workers."""

import multiprocessing
import os
import signal

from trainer_callbacks.clock import BudgetClock, ManualTime
from trainer_callbacks.preemption import PreemptionCallback


def _signal_three_times(path: str) -> None:
    time = ManualTime()
    callback = PreemptionCallback(BudgetClock(100.0, time_fn=time))
    callback.on_train_begin(None, None, None)
    for seconds, step in ((0.0, "first"), (0.1, "second"), (5.0, "third")):
        time.advance(seconds)
        os.kill(os.getpid(), signal.SIGTERM)
        with open(path, "w") as file:
            file.write(f"{step} signal handled")


def test_the_same_preemption_passed_on_by_a_launcher_does_not_exit_at_once(tmp_path):
    path = tmp_path / "progress"
    process = multiprocessing.get_context("fork").Process(target=_signal_three_times, args=(str(path),))
    process.start()
    process.join(timeout=60)
    # The second SIGTERM, 0.1 s after the first (the launcher's copy of SLURM's), is the same request; the third,
    # seconds later, is a user who wants out now.
    assert process.exitcode == -signal.SIGTERM
    assert path.read_text() == "second signal handled"
