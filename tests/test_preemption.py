"""The preemption and complete-checkpoint callbacks in the stock Trainer (tiny BERT, manual clock, no subprocess)."""

import json
import logging
import multiprocessing
import os
import signal
import threading

import pytest
import torch

from transformers import TrainerCallback

from trainer_callbacks.checkpoints import COMPLETE_MARKER, complete_checkpoints, incompleteness
from trainer_callbacks.clock import BudgetClock, ManualTime
from trainer_callbacks.snapshots import END_SNAPSHOT_NAME, SNAPSHOTS_DIR
from test_callbacks_trainer import BUDGET, AdvanceTime, RandomMLMData, make_trainer
from trainer_callbacks import (
    BudgetCallback,
    CompleteCheckpointCallback,
    FinetuneSnapshotCallback,
    PreemptionCallback,
    ShardCheckpointCallback,
    ValidationScheduleCallback,
)


@pytest.fixture(autouse=True)
def one_thread():
    # Two OpenMP threads on a busy two-core machine spin against each other: tiny steps get many times slower.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class SignalDuringStep(TrainerCallback):
    """Sends this process `signum` at the beginning of optimizer step `step`, as a scheduler would at any time."""

    def __init__(self, step: int, signum: int):
        self.step, self.signum = step, signum

    def on_step_begin(self, args, state, control, **kwargs):
        if state.global_step + 1 == self.step:
            os.kill(os.getpid(), self.signum)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_finishes_the_step_saves_a_complete_checkpoint_and_stops(tmp_path, signum):
    handler_before = signal.getsignal(signum)
    time = ManualTime()
    clock = BudgetClock(BUDGET, time_fn=time)
    callbacks = [
        BudgetCallback(clock),
        PreemptionCallback(clock),
        CompleteCheckpointCallback(),
        ValidationScheduleCallback(clock, steps_per_shard=2, validation_epochs=1),
        FinetuneSnapshotCallback(clock, markers=[0.02]),
        AdvanceTime(time),
        SignalDuringStep(5, signum),
    ]
    trainer = make_trainer(tmp_path, callbacks, eval_dataset=RandomMLMData(4, seed=1))
    trainer.train()

    assert trainer.state.global_step == 5 and clock.interrupted
    assert [step for step, _ in complete_checkpoints(tmp_path)] == [5]
    saved = json.loads((tmp_path / "checkpoint-5" / "trainer_state.json").read_text())
    assert saved["stateful_callbacks"]["BudgetCallback"]["attributes"]["elapsed_seconds"] == clock.elapsed
    assert saved["stateful_callbacks"]["FinetuneSnapshotCallback"]["attributes"]["taken_markers"] == [0.02]
    # The shard-end validations ran; the extra one at the stop and the `end` snapshot are left to the resumed run.
    assert [entry["step"] for entry in trainer.state.log_history if "eval_loss" in entry] == [2, 4]
    assert not (tmp_path / SNAPSHOTS_DIR / END_SNAPSHOT_NAME).exists()
    assert signal.getsignal(signum) is handler_before


def _signal_twice(path: str) -> None:
    # No window for a launcher's copy of the signal: the second one is a user's (see test_faults_preemption.py).
    callback = PreemptionCallback(BudgetClock(100.0), repeat_after_seconds=0.0)
    callback.on_train_begin(None, None, None)
    os.kill(os.getpid(), signal.SIGTERM)
    with open(path, "w") as file:
        file.write("first signal handled")
    os.kill(os.getpid(), signal.SIGTERM)
    with open(path, "w") as file:
        file.write("second signal handled")


def test_a_second_signal_exits_at_once(tmp_path):
    path = tmp_path / "progress"
    # fork: the child needs no fresh interpreter, and runs no torch operation that forking could upset.
    process = multiprocessing.get_context("fork").Process(target=_signal_twice, args=(str(path),))
    process.start()
    process.join(timeout=60)
    assert process.exitcode == -signal.SIGTERM
    assert path.read_text() == "first signal handled"


def test_signals_are_left_alone_outside_the_main_thread(caplog):
    handler_before = signal.getsignal(signal.SIGTERM)
    callback = PreemptionCallback(BudgetClock(100.0))
    caplog.set_level(logging.WARNING)
    thread = threading.Thread(target=callback.on_train_begin, args=(None, None, None))
    thread.start()
    thread.join()
    assert "outside the main thread" in caplog.text
    assert signal.getsignal(signal.SIGTERM) is handler_before


def test_checkpoints_are_marked_rotated_and_earlier_runs_retired(tmp_path):
    # Left by an earlier run that went further: a complete checkpoint and a half-written one.
    for step in (7, 9):
        (tmp_path / f"checkpoint-{step}").mkdir()
        (tmp_path / f"checkpoint-{step}" / "model.safetensors").write_bytes(b"old")
    (tmp_path / "checkpoint-9" / COMPLETE_MARKER).write_text(json.dumps({"global_step": 9, "files": {}}))

    callbacks = [ShardCheckpointCallback(1, 1), CompleteCheckpointCallback(save_total_limit=2)]
    trainer = make_trainer(tmp_path, callbacks, max_steps=5)
    trainer.train()

    assert [step for step, _ in complete_checkpoints(tmp_path)] == [4, 5]
    assert not (tmp_path / "checkpoint-3").exists() and not (tmp_path / "checkpoint-7").exists()
    assert "no budget_bert_complete.json" in incompleteness(tmp_path / "checkpoint-9")


def test_the_trainers_own_rotation_is_refused(tmp_path):
    with pytest.raises(ValueError, match="save_total_limit=2 .* CompleteCheckpointCallback"):
        make_trainer(tmp_path, [CompleteCheckpointCallback()], save_total_limit=2)
