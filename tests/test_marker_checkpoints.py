"""Training checkpoints kept at time markers, and snapshots that neither a crash nor a full disk can lose.

A tiny BERT in the stock Trainer with a clock that moves 7 s a step (the helpers of test_callbacks_trainer), and
one run_mlm.py run for the full disk's one line.
"""

import errno
import json

import pytest
from transformers import PreTrainedModel

from budget_bert.cli import run_cli
from pretraining_fixtures import TINY_MODEL_FLAGS, fake_clock, import_run_mlm, prepared_data  # noqa: F401 - fixture
from test_callbacks_trainer import BUDGET, SECONDS_PER_STEP, AdvanceTime, first_step_at_or_past, logged, make_trainer
from trainer_callbacks import (
    BudgetCallback,
    BudgetClock,
    CompleteCheckpointCallback,
    FinetuneSnapshotCallback,
    ManualTime,
    PreemptionCallback,
    ShardCheckpointCallback,
    TimeBasedLRCallback,
)
from trainer_callbacks.checkpoints import incompleteness
from trainer_callbacks.snapshots import (
    MARKER_CHECKPOINTS_DIR,
    SNAPSHOTS_DIR,
    SnapshotInfo,
    SnapshotWriteError,
    marker_checkpoint_folders,
    replace_folder,
    restore_interrupted_replacements,
)

MARKERS = [0.3, 0.5]


def wsd_run_callbacks(time, clock, markers=MARKERS, save_total_limit=1, checkpoint_every=2):
    """What run_mlm.py puts together for --curve wsd: checkpoints every few steps, rotated, kept at the markers."""
    return [
        BudgetCallback(clock),
        PreemptionCallback(clock),
        CompleteCheckpointCallback(save_total_limit),
        TimeBasedLRCallback(clock, 0.1, "wsd", cooldown_proportion=0.2),
        FinetuneSnapshotCallback(clock, markers, checkpoint_markers=markers),
        ShardCheckpointCallback(1, checkpoint_every),
        AdvanceTime(time),
    ]


def train(trainer, resume_from=None):
    preemption = next(cb for cb in trainer.callback_handler.callbacks if isinstance(cb, PreemptionCallback))
    try:
        return trainer.train(resume_from_checkpoint=resume_from)
    finally:
        preemption.restore_signal_handlers()


def test_marker_checkpoints_are_complete_and_outlive_the_rotation(tmp_path):
    time = ManualTime()
    clock = BudgetClock(BUDGET, time_fn=time)
    trainer = make_trainer(tmp_path, wsd_run_callbacks(time, clock))
    train(trainer)

    kept = marker_checkpoint_folders(tmp_path)
    assert sorted(kept) == ["marker-0.30", "marker-0.50"]
    for marker, (name, folder) in zip(MARKERS, sorted(kept.items())):
        step = first_step_at_or_past(marker * BUDGET)
        assert incompleteness(folder) is None
        state = json.loads((folder / "trainer_state.json").read_text())
        assert state["global_step"] == step
        assert BudgetCallback.saved_clock(state).elapsed == pytest.approx(step * SECONDS_PER_STEP)
        assert (folder / "optimizer.pt").is_file() and (folder / "scheduler.pt").is_file()
        assert any(folder.glob("rng_state*.pth"))
        assert not (tmp_path / f"checkpoint-{step}").exists()  # rotated away (--save_total_limit 1)
    assert [p.name for p in tmp_path.glob("checkpoint-*")] == [f"checkpoint-{trainer.state.global_step}"]


def test_a_run_resumed_from_a_marker_checkpoint_continues_it_exactly(tmp_path):
    time = ManualTime()
    clock = BudgetClock(BUDGET, time_fn=time)
    whole = make_trainer(tmp_path / "whole", wsd_run_callbacks(time, clock))
    train(whole)
    marker_checkpoint = tmp_path / "whole" / MARKER_CHECKPOINTS_DIR / "marker-0.30"
    start = first_step_at_or_past(0.3 * BUDGET)

    time = ManualTime(1000.0)
    clock = BudgetClock(BUDGET, time_fn=time)
    events = []
    resumed = make_trainer(tmp_path / "resumed", wsd_run_callbacks(time, clock))
    snapshots = next(cb for cb in resumed.callback_handler.callbacks if isinstance(cb, FinetuneSnapshotCallback))
    snapshots.on_snapshot = lambda path, info: events.append(info.name)
    train(resumed, resume_from=str(marker_checkpoint))

    assert resumed.state.global_step == whole.state.global_step
    after = range(start + 1, whole.state.global_step + 1)
    for key in ("loss", "learning_rate", "budget_fraction"):
        assert [logged(resumed, key).get(step) for step in after] == [logged(whole, key).get(step) for step in after]
    assert events == ["marker-0.50", "end"]  # the marker it resumed from is not taken again


def test_a_run_restarted_before_a_marker_checkpoint_drops_it(tmp_path):
    time = ManualTime()
    clock = BudgetClock(BUDGET, time_fn=time)
    train(make_trainer(tmp_path, wsd_run_callbacks(time, clock, save_total_limit=None), max_steps=8))
    assert sorted(marker_checkpoint_folders(tmp_path)) == ["marker-0.30", "marker-0.50"]

    time = ManualTime()
    clock = BudgetClock(BUDGET, time_fn=time)
    # Resumed from step 6 (checkpoint every 2 steps, none rotated): marker 0.5 (step 8) is of the other run.
    restarted = make_trainer(tmp_path, wsd_run_callbacks(time, clock, save_total_limit=None), max_steps=7)
    train(restarted, resume_from=str(tmp_path / "checkpoint-6"))
    assert sorted(marker_checkpoint_folders(tmp_path)) == ["marker-0.30"]


def fill_the_disk_once(model):
    """Make the model's next snapshot `save_pretrained` fail halfway, as on a full disk (checkpoints still save)."""
    save = model.save_pretrained

    def failing(path, *args, **kwargs):
        save(path, *args, **kwargs)
        if SNAPSHOTS_DIR in str(path):
            model.save_pretrained = save
            raise OSError(errno.ENOSPC, "No space left on device")

    model.save_pretrained = failing


def test_a_disk_full_during_a_snapshot_saves_a_checkpoint_and_names_it(tmp_path):
    time = ManualTime()
    clock = BudgetClock(BUDGET, time_fn=time)
    trainer = make_trainer(tmp_path, wsd_run_callbacks(time, clock, checkpoint_every=100))
    fill_the_disk_once(trainer.model)
    marker_step = first_step_at_or_past(0.3 * BUDGET)
    stop = f"checkpoint-{marker_step + 1}"
    with pytest.raises(SnapshotWriteError, match=f"marker-0.30 failed .*No space left on device.*{stop}"):
        train(trainer)
    assert trainer.state.global_step == marker_step + 1  # every process stops at the next step
    assert incompleteness(tmp_path / f"checkpoint-{marker_step + 1}") is None
    assert list((tmp_path / SNAPSHOTS_DIR).iterdir()) == []  # the partial snapshot is gone

    time = ManualTime()
    clock = BudgetClock(BUDGET, time_fn=time)
    resumed = make_trainer(tmp_path, wsd_run_callbacks(time, clock, checkpoint_every=100))
    train(resumed, resume_from=str(tmp_path / f"checkpoint-{marker_step + 1}"))
    info = SnapshotInfo.load(tmp_path / SNAPSHOTS_DIR / "marker-0.30")
    assert info.global_step == marker_step + 2  # taken at the first step of the resumed run


def test_a_disk_full_during_the_end_snapshot_names_the_last_checkpoint(tmp_path):
    time = ManualTime()
    clock = BudgetClock(BUDGET, time_fn=time)
    trainer = make_trainer(tmp_path, wsd_run_callbacks(time, clock, markers=[]))
    fill_the_disk_once(trainer.model)
    last = first_step_at_or_past(BUDGET)
    with pytest.raises(SnapshotWriteError, match=f"end failed .*the checkpoint .*checkpoint-{last} is complete"):
        train(trainer)
    assert list((tmp_path / SNAPSHOTS_DIR).iterdir()) == []


def folder_with(path, text):
    path.mkdir(parents=True)
    (path / "config.json").write_text(text)
    return path


def test_replacing_a_folder_keeps_the_old_one_until_the_new_one_is_in_place(tmp_path, monkeypatch):
    final = folder_with(tmp_path / "marker-0.50", "old")
    new = folder_with(tmp_path / ".marker-0.50.partial", "new")
    renames = []
    original = type(final).rename

    def crash_on_the_second_rename(self, target):
        renames.append(self.name)
        if len(renames) == 2:
            raise KeyboardInterrupt("killed")
        return original(self, target)

    monkeypatch.setattr(type(final), "rename", crash_on_the_second_rename)
    with pytest.raises(KeyboardInterrupt):
        replace_folder(new, final)
    monkeypatch.undo()
    assert not final.exists() and (tmp_path / ".marker-0.50.old" / "config.json").read_text() == "old"

    restore_interrupted_replacements(tmp_path)  # what the next run does when it starts
    assert (final / "config.json").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["marker-0.50"]

    replace_folder(folder_with(tmp_path / ".marker-0.50.partial", "new"), final)
    assert (final / "config.json").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["marker-0.50"]


def test_a_replaced_folder_whose_new_version_is_in_place_is_cleaned_up(tmp_path):
    folder_with(tmp_path / "end", "new")
    folder_with(tmp_path / ".end.old", "old")
    folder_with(tmp_path / ".marker-0.90.partial", "half")
    restore_interrupted_replacements(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["end"]
    assert (tmp_path / "end" / "config.json").read_text() == "new"


def test_run_mlm_ends_a_disk_full_snapshot_with_one_line_and_a_resumable_checkpoint(
    prepared_data, tmp_path, monkeypatch, capsys  # noqa: F811 - fixture
):
    run_mlm = import_run_mlm()
    argv = [
        "--dataset_path", str(prepared_data.dataset), "--output_dir", str(tmp_path / "out"), *TINY_MODEL_FLAGS,
        "--train_micro_batch_size_per_gpu", "8", "--total_training_time", "0.01", "--finetune_time_markers", "0.5",
        "--disable_tqdm", "true",
    ]
    save = PreTrainedModel.save_pretrained
    failed = []

    def save_or_fill_the_disk(self, path, *args, **kwargs):
        save(self, path, *args, **kwargs)
        if SNAPSHOTS_DIR in str(path) and not failed:
            failed.append(path)
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(PreTrainedModel, "save_pretrained", save_or_fill_the_disk)
    with pytest.raises(SystemExit) as exited:
        run_cli("run_mlm.py", lambda flags: run_mlm.main(flags, clock=fake_clock(flags)), argv)
    assert exited.value.code == 1
    err = capsys.readouterr().err
    (line,) = [line for line in err.splitlines() if line.startswith("run_mlm.py:")]
    assert "Traceback" not in err
    checkpoint = next((tmp_path / "out").glob("checkpoint-*"))
    assert line.startswith("run_mlm.py: error: writing the finetuning snapshot marker-0.50 failed (OSError: ")
    assert f"saved the checkpoint {checkpoint}" in line and incompleteness(checkpoint) is None

    run_mlm.main(argv, clock=fake_clock(argv))  # the same command resumes, and takes the snapshot
    assert SnapshotInfo.load(tmp_path / "out" / SNAPSHOTS_DIR / "marker-0.50").global_step > int(
        checkpoint.name.split("-")[1]
    )
