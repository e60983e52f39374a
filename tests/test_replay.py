"""Replaying a recorded budget run step for step, whatever the speed: the stock Trainer with the callbacks library,
then `run_mlm.py --replay_schedule_from` on the tiny pretraining preset."""

import json
import shutil

import pytest
import torch
from huggingface_hub import HfApi
from safetensors.torch import load_file
from transformers import BertConfig, BertForMaskedLM, Trainer, TrainerCallback, TrainingArguments

from budget_bert.cli import UsageError
from budget_bert.hub.model_card import ModelCardInfo, write_model_card
from budget_bert.pretraining.pretraining_arguments import parse_pretraining_args
from budget_bert.pretraining.replay import ReplaySchedule, run_conditions
from hub_server import hub_env, hub_server  # noqa: F401 - fixtures
from pretraining_fixtures import TINY_MODEL_FLAGS, SteppingTime, import_run_mlm, prepared_data  # noqa: F401
from trainer_callbacks import (
    BudgetCallback,
    BudgetClock,
    FinetuneSnapshotCallback,
    ManualTime,
    PreemptionCallback,
    TimeBasedLRCallback,
    ValidationScheduleCallback,
)
from trainer_callbacks.schedule_record import SCHEDULE_FILE, ScheduleRecord, ScheduleRecordCallback
from trainer_callbacks.snapshots import SnapshotInfo, load_snapshots
from test_schedule_record import SEQ_LEN, VOCAB_SIZE, Data


BUDGET = 100.0


class StepTime(TrainerCallback):
    """Each optimizer step takes `seconds(step)` of manual time; the steps of a real clock are uneven."""

    def __init__(self, time: ManualTime, seconds):
        self.time, self.seconds = time, seconds

    def on_step_begin(self, args, state, control, **kwargs):
        self.time.advance(self.seconds(state.global_step + 1))


class InterruptAt(TrainerCallback):
    """Asks the clock to interrupt at the end of `step`, as a SIGTERM would."""

    def __init__(self, clock, step):
        self.clock, self.step = clock, step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            self.clock.request_interrupt()


def budget_trainer(output_dir, clock, time, seconds, *extra, replay_of=None):
    """A tiny BERT trained by the budget callbacks: time-based LR, validation, markers, snapshots, a record."""
    torch.manual_seed(0)
    model = BertForMaskedLM(
        BertConfig(vocab_size=VOCAB_SIZE, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                   intermediate_size=32, max_position_embeddings=SEQ_LEN)
    )
    recorder = ScheduleRecordCallback(clock, schedule={"curve": "linear"}, replay_of=replay_of)
    callbacks = [
        BudgetCallback(clock),
        recorder,
        PreemptionCallback(clock),
        TimeBasedLRCallback(clock, warmup_proportion=0.1),
        ValidationScheduleCallback(clock, steps_per_shard=2, validation_epochs=2),
        FinetuneSnapshotCallback(clock, markers=[0.3, 0.6], on_snapshot=recorder.save_into_snapshot),
        StepTime(time, seconds),
        *extra,
    ]
    arguments = TrainingArguments(
        output_dir=str(output_dir), per_device_train_batch_size=2, per_device_eval_batch_size=2, max_steps=1000,
        learning_rate=0.01, lr_scheduler_type="constant", logging_steps=1, save_strategy="no", eval_strategy="no",
        report_to="none", use_cpu=True, disable_tqdm=True, seed=0,
    )
    return Trainer(model=model, args=arguments, train_dataset=Data(32), eval_dataset=Data(4, 1), callbacks=callbacks)


def real_looking_seconds(step: int) -> float:
    return 3.0 + 2.345678 * (step % 3) + 0.001 * step


def logged_rates(trainer) -> dict[int, float]:
    """{step: learning rate} of the trainer's log history."""
    return {entry["step"]: entry["learning_rate"] for entry in trainer.state.log_history if "learning_rate" in entry}


def snapshot_steps(output_dir) -> dict[str, int]:
    return {info.name: info.global_step for info in load_snapshots(output_dir)}


def assert_same_weights(a, b):
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        torch.testing.assert_close(x, y, msg=name)


@pytest.fixture(scope="module")
def original(tmp_path_factory):
    """A budget run on a clock with uneven steps of 3-8 s."""
    output_dir = tmp_path_factory.mktemp("original")
    time = ManualTime()
    trainer = budget_trainer(output_dir, BudgetClock(BUDGET, time_fn=time), time, real_looking_seconds)
    trainer.train()
    return trainer, output_dir


@pytest.mark.parametrize("seconds_per_step", [0.01, 60.0], ids=["sped-up", "slowed"])
def test_a_replay_takes_every_decision_at_the_recorded_step(original, tmp_path, seconds_per_step):
    trainer, original_dir = original
    record = ScheduleRecord.load(original_dir)
    time = ManualTime()

    replay = budget_trainer(
        tmp_path, record.replay_clock(time_fn=time), time, lambda step: seconds_per_step, replay_of=str(original_dir)
    )
    replay.train()

    assert replay.state.global_step == trainer.state.global_step == record.stop_step
    assert logged_rates(replay) == logged_rates(trainer)
    assert snapshot_steps(tmp_path) == snapshot_steps(original_dir)
    assert set(snapshot_steps(tmp_path)) == {"marker-0.30", "marker-0.60", "end"}
    replayed = ScheduleRecord.load(tmp_path)
    assert replayed.validation_steps == record.validation_steps and len(record.validation_steps) >= 3
    assert replayed.elapsed_ticks == record.elapsed_ticks
    assert replayed.runs[0]["replay_of"] == str(original_dir)
    assert_same_weights(replay.model, trainer.model)
    # The real time is logged, and is this hardware's, not the record's.
    wall = [entry["replay_wall_hours"] for entry in replay.state.log_history if "replay_wall_hours" in entry]
    assert wall[-1] == pytest.approx(seconds_per_step * record.stop_step / 3600)


def test_a_preempted_replay_resumes_on_the_recorded_schedule(original, tmp_path):
    trainer, original_dir = original
    record = ScheduleRecord.load(original_dir)

    time = ManualTime()
    clock = record.replay_clock(time_fn=time)
    first = budget_trainer(tmp_path, clock, time, lambda step: 1.0, InterruptAt(clock, 5))
    first.train()
    assert clock.interrupted and first.state.global_step == 6  # the interrupt is seen at the next tick

    time = ManualTime(1e6)  # a new process
    resumed = budget_trainer(tmp_path, record.replay_clock(time_fn=time), time, lambda step: 1.0)
    resumed.train(resume_from_checkpoint=str(tmp_path / "checkpoint-6"))

    assert resumed.state.global_step == record.stop_step
    assert logged_rates(resumed) == logged_rates(trainer)
    assert snapshot_steps(tmp_path) == snapshot_steps(original_dir)
    assert ScheduleRecord.load(tmp_path).validation_steps == record.validation_steps
    assert_same_weights(resumed.model, trainer.model)


def test_the_record_of_a_snapshot_replays_the_run_up_to_the_snapshot(original, tmp_path):
    _, original_dir = original
    snapshot = original_dir / "finetune_snapshots" / "marker-0.30"
    record = ScheduleRecord.load(snapshot)
    assert record.stop_step is None and record.last_step == SnapshotInfo.load(snapshot).global_step
    time = ManualTime()

    replay = budget_trainer(tmp_path, record.replay_clock(time_fn=time), time, lambda step: 1.0)
    replay.train()

    assert replay.state.global_step == record.last_step
    saved = load_file(snapshot / "model.safetensors")
    for name, tensor in replay.model.state_dict().items():
        if name in saved:
            torch.testing.assert_close(tensor, saved[name], msg=name)


def test_a_replay_refuses_to_start_outside_its_record(tmp_path):
    # Recorded from a resume at step 5 of a run that had no record before: a fresh start cannot replay it.
    record = ScheduleRecord(elapsed_ticks=[50_000_000, 60_000_000], first_step=5, runs=[{"budget_seconds": BUDGET}])
    trainer = budget_trainer(tmp_path, record.replay_clock(time_fn=ManualTime()), ManualTime(), lambda step: 1.0)
    with pytest.raises(ValueError, match="starts at step 5 but training starts at step 0"):
        trainer.train()


def recorded(global_batch_size=64, world_size=2, data=None, stop_step=3, **schedule):
    """A small record of a run with the given conditions and schedule flags."""
    record = ScheduleRecord(elapsed_ticks=[0, 1_000_000, 2_000_000, 3_000_000], stop_step=stop_step)
    conditions = run_conditions(global_batch_size, world_size, global_batch_size // world_size, 1, data or {"a": 1})
    flags = {"total_training_time": 1.0, "curve": "linear", "learning_rate": 1e-3, **schedule}
    record.runs.append({"start_step": 0, "budget_seconds": 3600.0, "schedule": flags, "conditions": conditions})
    return ReplaySchedule(record, "the-source")


def test_a_replay_refuses_other_schedule_flags_and_another_global_batch():
    replay = recorded()
    schedule = {"total_training_time": 2.0, "curve": "linear", "learning_rate": 1e-3}
    problems = replay.problems(schedule, run_conditions(32, 2, 16, 1, {"a": 1}))
    assert len(problems) == 2
    assert "--total_training_time 2.0 (recorded: 1.0); give the recorded values" in problems[0]
    assert "took 64 examples per optimizer step, this run 32" in problems[1]
    assert "global batch is 64" in problems[1]


def test_a_replay_on_other_processes_or_data_says_so_and_goes_on():
    replay = recorded()
    schedule = {"total_training_time": 1.0, "curve": "linear", "learning_rate": 1e-3}
    conditions = run_conditions(64, 1, 32, 2, {"a": 2})  # 1 process x 32 x 2 accumulation: the same 64 examples
    assert replay.problems(schedule, conditions) == []
    processes, data = replay.notices(conditions)
    assert "a run of 2 processes on 1, with the same global batch of 64" in processes
    assert "training data differs" in data
    assert replay.notices(run_conditions(64, 2, 32, 1, {"a": 1})) == []


def test_a_record_without_a_stop_says_the_replay_stops_at_its_end():
    replay = recorded(stop_step=None)
    assert "ends at step 3 without a stop" in replay.notices(run_conditions(64, 2, 32, 1, {"a": 1}))[0]


def test_loads_from_a_run_folder_a_snapshot_a_checkpoint_and_names_the_flag_otherwise(original, tmp_path):
    trainer, original_dir = original
    for source in (original_dir, original_dir / "finetune_snapshots" / "end", original_dir / SCHEDULE_FILE):
        assert ReplaySchedule.load(str(source)).record.stop_step == trainer.state.global_step
    checkpoint = original_dir / f"checkpoint-{trainer.state.global_step}"
    assert ReplaySchedule.load(str(checkpoint)).record.last_step == trainer.state.global_step
    with pytest.raises(ValueError, match=f"--replay_schedule_from {tmp_path}: no {SCHEDULE_FILE}"):
        ReplaySchedule.load(str(tmp_path))
    with pytest.raises(ValueError, match="no such file or folder, nor a Hub repo id"):
        ReplaySchedule.load(str(tmp_path / "missing" / "run"))


def test_loads_from_a_hub_branch(original, hub_env):
    _, original_dir = original
    api = HfApi(endpoint=hub_env.url, token=hub_env.token)
    api.create_repo("fake-user/bert-24h")
    api.create_branch("fake-user/bert-24h", branch="end")
    api.upload_file(path_or_fileobj=str(original_dir / SCHEDULE_FILE), path_in_repo=SCHEDULE_FILE,
                    repo_id="fake-user/bert-24h", revision="end")

    replay = ReplaySchedule.load("fake-user/bert-24h@end", token=hub_env.token)

    assert replay.record == ScheduleRecord.load(original_dir)
    with pytest.raises(ValueError, match="cannot download budget_schedule.json from the Hub"):
        ReplaySchedule.load("fake-user/bert-24h", token=hub_env.token)  # main has no schedule


# --- run_mlm.py --replay_schedule_from ---------------------------------------------------------------------------


def mlm_argv(data, output_dir, *extra) -> list[str]:
    """A tiny run of a few seconds: time-based LR, validation every shard, two markers, a log per step."""
    return [
        "--dataset_path", str(data.dataset), "--output_dir", str(output_dir), *TINY_MODEL_FLAGS,
        "--total_training_time", "0.001", "--lr", "1e-3", "--warmup_proportion", "0.1", "--do_validation",
        "--validation_epochs", "1", "--finetune_time_markers", "0.4,0.8", "--per_device_train_batch_size", "8",
        "--logging_steps", "1", "--disable_tqdm", "true", "--seed", "0", *extra,
    ]


@pytest.fixture(scope="module")
def mlm_original(prepared_data, tmp_path_factory):
    """run_mlm.py on the real clock, 3.6 s of budget."""
    output_dir = tmp_path_factory.mktemp("mlm") / "original"
    import_run_mlm().main(mlm_argv(prepared_data, output_dir))
    return output_dir


def mlm_learning_rates(output_dir) -> dict[int, float]:
    history = json.loads((output_dir / "trainer_state.json").read_text())["log_history"]
    return {entry["step"]: entry["learning_rate"] for entry in history if "learning_rate" in entry}


@pytest.mark.parametrize("seconds_per_read", [0.001, 30.0], ids=["sped-up", "slowed"])
def test_run_mlm_replays_a_real_clock_run_step_for_step(prepared_data, mlm_original, tmp_path, seconds_per_read):
    record = ScheduleRecord.load(mlm_original)
    assert record.stop_step >= 3 and record.validation_steps  # (as many steps as this machine managed)
    argv = mlm_argv(prepared_data, tmp_path / "replay", "--replay_schedule_from", str(mlm_original))
    clock = ReplaySchedule.load(str(mlm_original)).clock(time_fn=SteppingTime(seconds_per_read))

    import_run_mlm().main(argv, clock=clock)

    replay_dir = tmp_path / "replay"
    replayed = ScheduleRecord.load(replay_dir)
    assert replayed.stop_step == record.stop_step
    assert replayed.elapsed_ticks == record.elapsed_ticks
    assert replayed.validation_steps == record.validation_steps
    assert replayed.snapshot_steps == record.snapshot_steps
    assert set(record.snapshot_steps) == {"marker-0.40", "marker-0.80", "end"}
    assert mlm_learning_rates(replay_dir) == mlm_learning_rates(mlm_original)
    original, replay = load_file(mlm_original / "model.safetensors"), load_file(replay_dir / "model.safetensors")
    assert original.keys() == replay.keys()
    for name in original:
        torch.testing.assert_close(replay[name], original[name], msg=name)


def test_run_mlm_refuses_a_replay_with_other_flags_or_another_global_batch(prepared_data, mlm_original, tmp_path):
    replay = ["--replay_schedule_from", str(mlm_original)]
    argv = mlm_argv(prepared_data, tmp_path / "out", "--warmup_proportion", "0.2", *replay)
    with pytest.raises(UsageError, match=r"--warmup_proportion 0.2 \(recorded: 0.1\)"):
        parse_pretraining_args(argv)
    argv = mlm_argv(prepared_data, tmp_path / "out", "--per_device_train_batch_size", "4", *replay)
    with pytest.raises(UsageError, match="took 8 examples per optimizer step, this run 4"):
        parse_pretraining_args(argv)
    # The same global batch in another split is a replay.
    argv = mlm_argv(prepared_data, tmp_path / "out", "--per_device_train_batch_size", "4",
                    "--gradient_accumulation_steps", "2", *replay)
    assert parse_pretraining_args(argv).replay.record == ScheduleRecord.load(mlm_original)


def test_the_model_card_summarises_the_schedule_and_how_to_replay_it(original, tmp_path):
    trainer, original_dir = original
    snapshot = shutil.copytree(original_dir / "finetune_snapshots" / "end", tmp_path / "end")
    record = ScheduleRecord.load(snapshot)

    card = write_model_card(snapshot, ModelCardInfo(), repo_id="me/bert-24h", branch="end", also_main=True).read_text()

    stop = record.stop_step
    assert f"| Optimizer steps recorded | 0 to {stop:,}, the run stopped at step {stop:,} |" in card
    first, last = record.validation_steps[0], record.validation_steps[-1]
    assert f"| Validations | {len(record.validation_steps)}, at steps {first} to {last} |" in card
    marker_30, marker_60 = record.snapshot_steps["marker-0.30"], record.snapshot_steps["marker-0.60"]
    assert f"| Snapshots | `marker-0.30` at step {marker_30}, `marker-0.60` at step {marker_60}, `end` at step {stop}" in card
    assert "| Learning rate | not recorded |" in card  # this test's record has no learning-rate flags
    assert "--replay_schedule_from me/bert-24h@end" in card


def test_a_run_mlm_snapshot_card_names_its_learning_rate_schedule_and_batch(mlm_original, tmp_path):
    snapshot = shutil.copytree(mlm_original / "finetune_snapshots" / "end", tmp_path / "end")
    card = write_model_card(snapshot, ModelCardInfo(), repo_id="me/tiny", branch="end", also_main=True).read_text()
    schedule = "wsd curve of the budget used, 10% warmup, 1-sqrt cooldown over the last 20%, peak 0.001"
    assert f"| Learning rate | {schedule} |" in card
    assert "| Global batch | 8 examples per step, 1 process(es) |" in card
