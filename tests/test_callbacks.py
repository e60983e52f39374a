"""Each budget callback on its own, driven by hand with a manual clock: no Trainer, no model training."""

import io
import json
import math
import subprocess
import sys

import pytest
import torch

from transformers import TrainerControl, TrainerState, TrainingArguments

from trainer_callbacks import (
    BudgetCallback,
    BudgetEarlyStoppingCallback,
    BudgetProgressCallback,
    FinetuneSnapshotCallback,
    ShardCheckpointCallback,
    TimeBasedLRCallback,
    ValidationScheduleCallback,
)
from trainer_callbacks.clock import BudgetClock, ManualTime
from trainer_callbacks.lr_curves import lr_factor
from trainer_callbacks.shards import completed_shards
from trainer_callbacks.snapshots import snapshot_name


BUDGET = 1000.0


@pytest.fixture
def args(tmp_path):
    return TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to="none", lr_scheduler_type="constant")


def running_clock(elapsed=0.0, budget=BUDGET):
    """A started clock whose reading is `elapsed` seconds."""
    time = ManualTime()
    clock = BudgetClock(budget, time_fn=time)
    clock.start()
    time.advance(elapsed)
    clock.tick()
    return clock


def state_with(callback, global_step=0):
    """The TrainerState a fresh Trainer would hold: the callback's own exported state."""
    return TrainerState(global_step=global_step, stateful_callbacks=[callback])


# --- shards -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("step, expected", [(0, None), (1, None), (3, None), (4, 1), (8, 2), (9, None)])
def test_completed_shards(step, expected):
    assert completed_shards(step, 4) == expected


# --- budget -----------------------------------------------------------------------------------------------------


def drive_budget(callback, time, seconds_per_step, max_steps=100):
    """Run optimizer steps until the callback stops training; return the stopping step and the control."""
    state, control = state_with(callback), TrainerControl()
    callback.on_train_begin(None, state, control)
    for step in range(1, max_steps + 1):
        time.advance(seconds_per_step)
        callback.on_optimizer_step(None, state, control)
        state.global_step = step
        if control.should_training_stop:
            return step, control
    return None, control


def test_budget_stops_and_saves_at_the_first_step_past_the_budget():
    time = ManualTime()
    callback = BudgetCallback(BudgetClock(BUDGET, time_fn=time))
    step, control = drive_budget(callback, time, 30.0)
    assert step == math.ceil(BUDGET / 30.0)
    assert control.should_save


@pytest.mark.parametrize("early_exit, expected_seconds", [(200.0, 200.0), (5000.0, BUDGET), (None, BUDGET)])
def test_budget_stops_at_early_exit_marker_when_earlier(early_exit, expected_seconds):
    time = ManualTime()
    callback = BudgetCallback(BudgetClock(BUDGET, time_fn=time), stop_after_seconds=early_exit)
    step, _ = drive_budget(callback, time, 30.0)
    assert step == math.ceil(expected_seconds / 30.0)


def test_budget_state_is_the_seconds_used_and_is_restored_on_train_begin():
    time = ManualTime()
    callback = BudgetCallback(BudgetClock(BUDGET, time_fn=time))
    drive_budget(callback, time, 30.0, max_steps=4)
    exported = callback.state()
    assert exported == {
        "args": {},
        "attributes": {"elapsed_seconds": 120.0, "budget_seconds": BUDGET, "reading_seconds": 120.0, "steps": 4},
    }

    # A resumed Trainer loads the checkpoint's trainer_state.json before on_train_begin.
    resumed = BudgetCallback(BudgetClock(BUDGET, time_fn=ManualTime(77.0)))
    state = TrainerState(stateful_callbacks={"BudgetCallback": json.loads(json.dumps(exported))})
    resumed.on_train_begin(None, state, TrainerControl())
    assert resumed.clock.elapsed == 120.0 and resumed.clock.started


def test_budget_without_saved_entry_adds_one_for_the_next_checkpoint():
    callback = BudgetCallback(BudgetClock(BUDGET, time_fn=ManualTime(), elapsed_before=10.0))
    state = TrainerState(stateful_callbacks={"TrainerControl": {}})  # a checkpoint written without this callback
    callback.on_train_begin(None, state, TrainerControl())
    assert state.stateful_callbacks["BudgetCallback"]["attributes"]["elapsed_seconds"] == 10.0
    assert callback.clock.elapsed == 10.0


def test_budget_clock_stops_counting_after_training():
    time = ManualTime()
    callback = BudgetCallback(BudgetClock(BUDGET, time_fn=time))
    drive_budget(callback, time, 30.0, max_steps=2)
    callback.on_train_end(None, TrainerState(), TrainerControl())
    time.advance(500.0)
    assert callback.clock.measure() == 60.0


# --- time-based learning rate --------------------------------------------------------------------------------------


def constant_scheduler(lr=1.0):
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)


@pytest.mark.parametrize("curve", ["linear", "exp"])
def test_time_based_lr_follows_the_clock(args, curve):
    time = ManualTime()
    clock = BudgetClock(BUDGET, time_fn=time)
    callback = TimeBasedLRCallback(clock, warmup_proportion=0.2, curve=curve, decay_rate=0.5, decay_interval=0.25)
    optimizer, scheduler = constant_scheduler(lr=2.0)
    callback.on_train_begin(args, TrainerState(), TrainerControl(), lr_scheduler=scheduler)
    clock.start()
    callback.on_step_begin(args, TrainerState(), TrainerControl())
    assert scheduler.get_last_lr() == [0.0] and optimizer.param_groups[0]["lr"] == 0.0

    for fraction in (0.1, 0.2, 0.45, 0.7, 1.0, 1.3):
        time.now = fraction * BUDGET
        clock.tick()
        optimizer.step()
        scheduler.step()
        expected = 2.0 * lr_factor(fraction, 0.2, curve, decay_rate=0.5, decay_interval=0.25)
        assert scheduler.get_last_lr() == [pytest.approx(expected)]
        assert optimizer.param_groups[0]["lr"] == pytest.approx(expected)


def test_time_based_lr_first_rate_reads_the_restored_clock(args):
    clock = BudgetClock(BUDGET, time_fn=ManualTime())
    callback = TimeBasedLRCallback(clock, warmup_proportion=0.1)
    optimizer, scheduler = constant_scheduler()
    callback.on_train_begin(args, TrainerState(), TrainerControl(), lr_scheduler=scheduler)
    clock.load_state_dict({"elapsed_seconds": 0.5 * BUDGET})  # the budget callback restores after this one
    clock.start()
    callback.on_step_begin(args, TrainerState(), TrainerControl())
    assert scheduler.get_last_lr() == [pytest.approx(lr_factor(0.5, 0.1))]


def test_time_based_lr_scheduler_still_checkpoints(args):
    clock = BudgetClock(BUDGET, time_fn=ManualTime())
    optimizer, scheduler = constant_scheduler()
    TimeBasedLRCallback(clock).on_train_begin(args, TrainerState(), TrainerControl(), lr_scheduler=scheduler)
    buffer = io.BytesIO()
    torch.save(scheduler.state_dict(), buffer)
    buffer.seek(0)
    assert torch.load(buffer, weights_only=True)["lr_lambdas"] == [None]


def test_time_based_lr_refuses_a_scheduler_it_cannot_drive(tmp_path):
    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, lr_scheduler_type="cosine", warmup_steps=10)
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1)
    callback = TimeBasedLRCallback(BudgetClock(BUDGET))
    with pytest.raises(ValueError, match="--lr_scheduler_type is cosine.*--warmup_steps 10.*not a LambdaLR"):
        callback.on_train_begin(args, TrainerState(), TrainerControl(), lr_scheduler=scheduler)


# --- validation schedule ------------------------------------------------------------------------------------------


def evaluated_steps(callback, clock, time, steps, seconds_per_step, stop_at=None):
    """Steps at which the callback asks for an evaluation; training is stopped (by another callback) at `stop_at`."""
    state, evaluated = TrainerState(), []
    for step in range(1, steps + 1):
        control = TrainerControl(should_training_stop=step == stop_at)
        time.advance(seconds_per_step)
        clock.tick()
        state.global_step = step
        callback.on_step_end(None, state, control)
        if control.should_evaluate:
            evaluated.append(step)
    return evaluated


def test_validation_every_stage_interval():
    time = ManualTime()
    clock = BudgetClock(BUDGET, time_fn=time)
    clock.start()
    callback = ValidationScheduleCallback(
        clock,
        steps_per_shard=10,
        validation_epochs=4,
        validation_epochs_begin=1,
        validation_epochs_end=2,
        validation_begin_proportion=0.3,
        validation_end_proportion=0.3,
    )
    # 10 s a step, 100 s a shard: shard n ends at n/10 of the budget. Begin (< 0.3): shards 1, 2; middle: shard 4;
    # end (> 0.7): even shards 8, 10. Shards 3 and 7 sit on the stage boundaries, 0.3 and 0.7: middle stage.
    assert evaluated_steps(callback, clock, time, 100, 10.0) == [10, 20, 40, 80, 100]


def test_validation_once_more_when_training_stops():
    time = ManualTime()
    clock = BudgetClock(BUDGET, time_fn=time)
    clock.start()
    callback = ValidationScheduleCallback(clock, steps_per_shard=10, validation_epochs=100, validation_epochs_begin=100)
    assert evaluated_steps(callback, clock, time, 37, 1.0, stop_at=37) == [37]


# --- checkpoints ------------------------------------------------------------------------------------------------


def test_checkpoint_every_n_shards():
    callback = ShardCheckpointCallback(steps_per_shard=3, num_epochs_between_checkpoints=2)
    saved = []
    for step in range(1, 20):
        control = TrainerControl()
        callback.on_step_end(None, TrainerState(global_step=step), control)
        if control.should_save:
            saved.append(step)
    assert saved == [6, 12, 18]


# --- early stopping ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "minutes, eval_loss, stops",
    [(10, 7.0, False), (30, 7.0, True), (45, 7.0, True), (45, 5.0, False), (1, float("nan"), True)],
)
def test_early_stop_on_eval_loss(minutes, eval_loss, stops):
    clock = running_clock(minutes * 60, budget=3600.0)
    callback = BudgetEarlyStoppingCallback(clock, after_seconds=30 * 60, max_eval_loss=6.0)
    control = TrainerControl()
    callback.on_evaluate(None, TrainerState(), control, metrics={"eval_loss": eval_loss})
    assert control.should_training_stop is stops
    assert not control.should_save


@pytest.mark.parametrize("loss, stops", [(2.5, False), (float("nan"), True), (float("inf"), True)])
def test_early_stop_on_diverged_training_loss_saves(loss, stops):
    callback = BudgetEarlyStoppingCallback(running_clock())
    control = TrainerControl()
    callback.on_log(None, TrainerState(), control, logs={"loss": loss, "learning_rate": 0.1})
    assert control.should_training_stop is stops and control.should_save is stops


def test_early_stop_ignores_logs_without_loss():
    control = TrainerControl()
    BudgetEarlyStoppingCallback(running_clock()).on_log(None, TrainerState(), control, logs={"eval_loss": 1.0})
    assert not control.should_training_stop


# --- finetuning snapshots -----------------------------------------------------------------------------------------


class FolderModel:
    """Stands in for a PreTrainedModel: `save_pretrained` writes one file, or fails halfway when told to."""

    def __init__(self, fail=False):
        self.fail = fail

    def save_pretrained(self, path):
        path.mkdir(parents=True)
        (path / "model.safetensors").write_text("weights")
        if self.fail:
            raise OSError("disk full")


def test_snapshot_names():
    names = [snapshot_name(m) for m in (0.5, 0.9, 1.0, 0.125)]
    assert names == ["marker-0.50", "marker-0.90", "marker-1.00", "marker-0.125"]


def test_snapshot_markers_once_each_on_the_main_process(args, tmp_path):
    time = ManualTime()
    clock = BudgetClock(BUDGET, time_fn=time)
    clock.start()
    events = []
    callback = FinetuneSnapshotCallback(clock, markers=[0.9, 0.5], on_snapshot=lambda path, info: events.append(info))
    state = state_with(callback)
    callback.on_train_begin(args, state, TrainerControl())
    for step in range(1, 12):
        time.advance(100.0)
        clock.tick()
        state.global_step = step
        callback.on_step_end(args, state, TrainerControl(), model=FolderModel())
    assert [(info.name, info.marker, info.global_step) for info in events] == [
        ("marker-0.50", 0.5, 5),
        ("marker-0.90", 0.9, 9),
    ]
    assert callback.state() == {"args": {}, "attributes": {"taken_markers": [0.5, 0.9]}}

    replica = TrainerState(is_world_process_zero=False)
    callback.on_train_end(args, replica, TrainerControl(), model=FolderModel())
    assert not (tmp_path / "finetune_snapshots" / "end").exists()
    callback.on_train_end(args, state, TrainerControl(), model=FolderModel())
    assert (tmp_path / "finetune_snapshots" / "end" / "model.safetensors").exists()
    assert events[-1].name == "end" and events[-1].marker is None


def test_snapshot_crash_leaves_no_half_snapshot_and_the_next_one_recovers(args, tmp_path):
    callback = FinetuneSnapshotCallback(running_clock(), save_at_end=True)
    state = TrainerState()
    with pytest.raises(OSError, match="disk full"):
        callback.on_train_end(args, state, TrainerControl(), model=FolderModel(fail=True))
    root = tmp_path / "finetune_snapshots"
    assert not (root / "end").exists()

    callback.on_train_end(args, state, TrainerControl(), model=FolderModel())
    assert [p.name for p in root.iterdir()] == ["end"]
    callback.on_train_end(args, state, TrainerControl(), model=FolderModel())  # replaces it
    assert [p.name for p in root.iterdir()] == ["end"]


def test_snapshot_markers_taken_before_a_resume_are_not_taken_again(args):
    events = []
    callback = FinetuneSnapshotCallback(
        running_clock(0.95 * BUDGET), markers=[0.5, 0.9], on_snapshot=lambda path, info: events.append(info.name)
    )
    saved = {"args": {}, "attributes": {"taken_markers": [0.5]}}
    state = TrainerState(stateful_callbacks={"FinetuneSnapshotCallback": saved})
    callback.on_train_begin(args, state, TrainerControl())
    callback.on_step_end(args, state, TrainerControl(), model=FolderModel())
    assert events == ["marker-0.90"]


# --- progress ---------------------------------------------------------------------------------------------------


def test_progress_adds_budget_keys_to_logs_and_history(tmp_path):
    args = TrainingArguments(
        output_dir=str(tmp_path), use_cpu=True, include_num_input_tokens_seen="all", disable_tqdm=True
    )
    time = ManualTime()
    clock = BudgetClock(BUDGET, time_fn=time)
    clock.start()
    callback = BudgetProgressCallback(clock)
    state = TrainerState()
    callback.on_train_begin(args, state, TrainerControl())
    assert callback.training_bar is None  # --disable_tqdm
    callback.on_step_begin(args, state, TrainerControl())

    time.advance(360.0)
    clock.tick()
    state.num_input_tokens_seen = 7200
    logs = {"loss": 2.0, "learning_rate": 0.1}
    state.log_history.append({**logs, "step": 1})
    callback.on_log(args, state, TrainerControl(), logs=logs)
    added = {"budget_elapsed_hours": 0.1, "budget_fraction": 0.36, "tokens_per_second": 20.0}
    assert logs == {"loss": 2.0, "learning_rate": 0.1, **added}
    assert state.log_history[-1] == {"loss": 2.0, "learning_rate": 0.1, "step": 1, **added}

    eval_logs = {"eval_loss": 3.0}
    callback.on_log(args, state, TrainerControl(), logs=eval_logs)
    assert set(eval_logs) == {"eval_loss", "budget_elapsed_hours", "budget_fraction"}
    callback.on_train_end(args, state, TrainerControl())


def test_trainer_callbacks_stands_alone():
    # A library for any Trainer user: importing it must not import (and register) budget_bert.
    code = "import sys, trainer_callbacks, trainer_callbacks.checkpoints, trainer_callbacks.snapshots; " \
           "print(sorted(m for m in sys.modules if m.partition('.')[0] == 'budget_bert'))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert result.stdout.strip() == "[]"
