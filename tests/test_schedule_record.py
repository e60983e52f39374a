"""The schedule record: its compact JSON form, the callback that records a run, and the clock that replays a record."""

import json

import pytest
import torch
from transformers import BertConfig, BertForMaskedLM, Trainer, TrainerCallback, TrainingArguments

from trainer_callbacks import BudgetCallback, BudgetClock, ManualTime
from trainer_callbacks.clock import ReplayClock
from trainer_callbacks.schedule_record import SCHEDULE_FILE, ScheduleRecord, ScheduleRecordCallback
from trainer_callbacks.snapshots import SnapshotInfo


BUDGET = 100.0
SECONDS_PER_STEP = 7.0
SEQ_LEN = 8
VOCAB_SIZE = 32


def irregular_readings(steps: int):
    """A real-looking clock: steps of uneven, unround lengths; returns the clock's reading after each tick."""
    time = ManualTime()
    clock = BudgetClock(BUDGET, time_fn=time)
    clock.start()
    readings = [clock.elapsed]
    for step in range(steps):
        time.advance(0.1 + 0.0123456789 * (step % 7))
        readings.append(clock.tick())
    return readings


def test_json_round_trip_is_exact_and_compact():
    readings = irregular_readings(50)
    record = ScheduleRecord(runs=[{"start_step": 0, "budget_seconds": BUDGET}], validation_steps=[10, 20])
    for step, reading in enumerate(readings):
        record.record_step(step, reading)

    loaded = ScheduleRecord.from_dict(json.loads(json.dumps(record.to_dict())))

    assert loaded == record
    # Exactly what the clock read, to the bit: a replay's learning rate equals the original's.
    assert [loaded.elapsed_seconds(step) for step in range(51)] == readings
    assert loaded.last_step == 50


def test_a_day_of_steps_stays_under_a_megabyte():
    record = ScheduleRecord(runs=[{"start_step": 0, "budget_seconds": 86400.0}])
    elapsed = 0.0
    for step in range(100_001):
        record.record_step(step, elapsed)
        elapsed += 0.864 + 0.001 * (step % 13)  # 10^5 steps in about a day
    text = json.dumps(record.to_dict())
    assert len(text) < 1_000_000
    assert ScheduleRecord.from_dict(json.loads(text)).elapsed_seconds(100_000) == record.elapsed_seconds(100_000)


@pytest.mark.parametrize(
    "data, match",
    [({"format_version": 99}, "format_version 99"), ({"format_version": 1, "runs": []}, "not a schedule record")],
)
def test_refuses_what_is_not_a_record(data, match):
    with pytest.raises(ValueError, match=match):
        ScheduleRecord.from_dict(data)


def test_load_names_the_path_without_a_record(tmp_path):
    with pytest.raises(ValueError, match=f"{tmp_path}: no {SCHEDULE_FILE}"):
        ScheduleRecord.load(tmp_path)


def test_a_resumed_clock_reads_the_last_tick_and_counts_the_time_since():
    time = ManualTime()
    clock = BudgetClock(BUDGET, time_fn=time)
    clock.start()
    time.advance(0.3)
    clock.tick()
    time.advance(30.0)  # saving the checkpoint
    saved = clock.state_dict()

    resumed = BudgetClock.from_state_dict(json.loads(json.dumps(saved)), time_fn=ManualTime())
    resumed.start()
    # The first step of the resumed run runs at the rate of the reading after the last step, as without the stop...
    assert (resumed.elapsed, resumed.steps) == (0.3, 1)
    # ... and the seconds spent saving count at the next tick.
    resumed.time_fn.advance(1.0)
    assert resumed.tick() == 31.3


def test_replay_clock_reads_the_record_whatever_the_time():
    time = ManualTime()
    clock = ReplayClock(BUDGET, [0.0, 10.0, 25.0], time_fn=time)
    clock.start()
    time.advance(1000.0)
    assert clock.tick() == 10.0 and clock.fraction == 0.1
    time.advance(1000.0)
    assert clock.tick() == 25.0
    assert clock.wall_seconds == 2000.0
    with pytest.raises(ValueError, match="Step 3 is outside the replayed schedule"):
        clock.tick()


def test_replay_clock_resumes_at_the_saved_step_and_refuses_another_runs_checkpoint():
    time = ManualTime()
    clock = ReplayClock(BUDGET, [0.0, 10.0, 25.0, 40.0], time_fn=time)
    clock.start()
    clock.tick()
    time.advance(5.0)
    clock.stop()
    saved = json.loads(json.dumps(clock.state_dict()))

    resumed = ReplayClock(BUDGET, [0.0, 10.0, 25.0, 40.0], time_fn=ManualTime())
    resumed.load_state_dict(saved)
    resumed.start()
    assert (resumed.steps, resumed.elapsed, resumed.wall_seconds) == (1, 10.0, 5.0)
    assert resumed.tick() == 25.0

    other = ReplayClock(BUDGET, [0.0, 11.0, 25.0], time_fn=ManualTime())
    with pytest.raises(ValueError, match="from another run"):
        other.load_state_dict(saved)
    with pytest.raises(ValueError, match="no step count"):
        other.load_state_dict({"elapsed_seconds": 10.0, "budget_seconds": BUDGET})


class Data(torch.utils.data.Dataset):
    """`size` random sequences of SEQ_LEN ids, every third position labelled."""

    def __init__(self, size: int = 16, seed: int = 0):
        self.input_ids = torch.randint(5, VOCAB_SIZE, (size, SEQ_LEN), generator=torch.Generator().manual_seed(seed))

    def __len__(self):
        return len(self.input_ids)

    def __getitem__(self, i):
        labels = self.input_ids[i].clone()
        labels[torch.arange(SEQ_LEN) % 3 != 0] = -100
        return {"input_ids": self.input_ids[i], "labels": labels}


class AdvanceTime(TrainerCallback):
    """Each optimizer step takes `seconds` of manual time."""

    def __init__(self, time: ManualTime, seconds: float):
        self.time, self.seconds = time, seconds

    def on_step_begin(self, args, state, control, **kwargs):
        self.time.advance(self.seconds)


def recording_trainer(output_dir, time, seconds_per_step=SECONDS_PER_STEP):
    """A tiny BERT whose budget ends training, validating every 3 steps and saving every 4, with a record."""
    clock = BudgetClock(BUDGET, time_fn=time)
    recorder = ScheduleRecordCallback(clock, schedule={"curve": "linear"}, conditions={"global_batch_size": 2})
    torch.manual_seed(0)
    model = BertForMaskedLM(
        BertConfig(vocab_size=VOCAB_SIZE, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                   intermediate_size=32, max_position_embeddings=SEQ_LEN)
    )
    arguments = TrainingArguments(
        output_dir=str(output_dir), per_device_train_batch_size=2, per_device_eval_batch_size=2, max_steps=1000,
        eval_strategy="steps", eval_steps=3, save_strategy="steps", save_steps=4, report_to="none", use_cpu=True,
        disable_tqdm=True, seed=0,
    )
    callbacks = [BudgetCallback(clock), recorder, AdvanceTime(time, seconds_per_step)]
    trainer = Trainer(model=model, args=arguments, train_dataset=Data(), eval_dataset=Data(4), callbacks=callbacks)
    return trainer, recorder


def test_records_every_step_and_event_into_output_dir_and_checkpoints(tmp_path):
    trainer, recorder = recording_trainer(tmp_path, ManualTime())
    trainer.train()

    last = 15  # the first step at or past the 100 s budget at 7 s a step
    record = ScheduleRecord.load(tmp_path)
    assert record == recorder.record
    assert [record.elapsed_seconds(step) for step in range(last + 1)] == [SECONDS_PER_STEP * s for s in range(16)]
    assert record.stop_step == last
    assert record.validation_steps == [3, 6, 9, 12, 15]
    assert record.checkpoint_steps == [4, 8, 12, 15]  # every 4 steps, and the budget's stop
    assert record.runs == [
        {"start_step": 0, "budget_seconds": BUDGET, "schedule": {"curve": "linear"},
         "conditions": {"global_batch_size": 2}, "replay_of": None}
    ]
    # Each checkpoint carries the record up to its step.
    assert ScheduleRecord.load(tmp_path / "checkpoint-8").last_step == 8

    snapshot = tmp_path / "snapshot"
    snapshot.mkdir()
    recorder.save_into_snapshot(snapshot, SnapshotInfo("end", None, last, 105.0, BUDGET))
    assert ScheduleRecord.load(snapshot).snapshot_steps == {"end": last}


def test_resume_continues_the_record_from_the_checkpoint(tmp_path):
    first, _ = recording_trainer(tmp_path, ManualTime())
    first.train()

    # As after a crash past step 8: resume from checkpoint-8, now at 5 s a step.
    resumed, recorder = recording_trainer(tmp_path, ManualTime(), seconds_per_step=5.0)
    resumed.train(resume_from_checkpoint=str(tmp_path / "checkpoint-8"))

    record = recorder.record
    expected = [SECONDS_PER_STEP * s for s in range(9)] + [56.0 + 5.0 * s for s in range(1, 10)]
    assert [record.elapsed_seconds(step) for step in range(record.last_step + 1)] == expected
    assert record.stop_step == 17  # 56 s + 9 steps of 5 s: the first reading at or past 100 s
    assert [run["start_step"] for run in record.runs] == [0, 8]
    assert record.validation_steps == [3, 6, 9, 12, 15]
    assert record.checkpoint_steps == [4, 8, 12, 16, 17]
    assert ScheduleRecord.load(tmp_path) == record
