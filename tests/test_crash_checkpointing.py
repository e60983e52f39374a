"""Complete-checkpoint detection, resume resolution, rotation, the output folder checks, the resume command."""

import errno
import hashlib
import json
import logging
import shlex

import pytest
import torch

from budget_bert.pretraining.output_dir import check_output_dir, checkpoint_bytes
from budget_bert.pretraining.resume import resume_command
from trainer_callbacks.checkpoints import (
    COMPLETE_MARKER,
    complete_checkpoints,
    failed_save_message,
    incompleteness,
    mark_complete,
    newest_complete_checkpoint,
    resolve_resume_checkpoint,
    retire_checkpoints_after,
    rotate_checkpoints,
)


def write_checkpoint(output_dir, step, complete=True):
    """A `checkpoint-<step>` folder with a weights file and a sub-folder (as DeepSpeed writes), marked if `complete`."""
    folder = output_dir / f"checkpoint-{step}"
    (folder / "global_step").mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(b"w" * (100 + step))
    (folder / "global_step" / "optim_states.pt").write_bytes(b"o" * 10)
    if complete:
        mark_complete(folder, step)
    return folder


def test_marked_checkpoint_is_complete_and_records_every_file(tmp_path):
    folder = write_checkpoint(tmp_path, 4)
    assert incompleteness(folder) is None
    marker = json.loads((folder / COMPLETE_MARKER).read_text())
    assert marker["global_step"] == 4
    assert marker["files"] == {"global_step/optim_states.pt": 10, "model.safetensors": 104}
    assert marker["sha256"] == {name: hashlib.sha256((folder / name).read_bytes()).hexdigest() for name in marker["files"]}
    assert not list(folder.glob(".*partial"))


@pytest.mark.parametrize(
    "damage, reason",
    [
        (lambda folder: (folder / COMPLETE_MARKER).unlink(), "save did not finish"),
        (lambda folder: (folder / COMPLETE_MARKER).write_text('{"files": '), "unreadable"),
        (lambda folder: (folder / "model.safetensors").write_bytes(b"short"), "model.safetensors has 5 bytes, 104"),
        (lambda folder: (folder / "global_step" / "optim_states.pt").unlink(), "optim_states.pt is missing"),
    ],
)
def test_damaged_checkpoint_is_incomplete_with_the_reason(tmp_path, damage, reason):
    folder = write_checkpoint(tmp_path, 4)
    damage(folder)
    assert reason in incompleteness(folder)


def test_auto_resume_takes_the_newest_complete_checkpoint_and_names_skipped_ones(tmp_path, caplog):
    write_checkpoint(tmp_path, 4)
    write_checkpoint(tmp_path, 8)
    write_checkpoint(tmp_path, 12, complete=False)
    (tmp_path / "checkpoint-x").mkdir()  # not a checkpoint name: ignored
    expected = str(tmp_path / "checkpoint-8")
    caplog.set_level(logging.WARNING)
    assert resolve_resume_checkpoint(tmp_path, "auto") == expected
    assert resolve_resume_checkpoint(tmp_path, None) == expected  # the default, as in HuggingFace examples
    assert "Skipping" in caplog.text and "checkpoint-12" in caplog.text
    assert [step for step, _ in complete_checkpoints(tmp_path)] == [4, 8]


def test_resume_starts_fresh_without_complete_checkpoints_or_when_overwriting(tmp_path):
    assert resolve_resume_checkpoint(tmp_path / "missing", "auto") is None
    write_checkpoint(tmp_path, 4, complete=False)
    assert resolve_resume_checkpoint(tmp_path, "auto") is None
    write_checkpoint(tmp_path, 8)
    assert resolve_resume_checkpoint(tmp_path, None, overwrite_output_dir=True) is None
    # An explicit request wins over --overwrite_output_dir.
    assert resolve_resume_checkpoint(tmp_path, "auto", overwrite_output_dir=True) == str(tmp_path / "checkpoint-8")


def test_explicit_incomplete_checkpoint_is_refused_with_the_alternative(tmp_path):
    write_checkpoint(tmp_path, 4)
    write_checkpoint(tmp_path, 8, complete=False)
    assert resolve_resume_checkpoint(tmp_path, str(tmp_path / "checkpoint-4")) == str(tmp_path / "checkpoint-4")
    with pytest.raises(ValueError, match=r"--resume_from_checkpoint .*checkpoint-8 is not a complete .*checkpoint-4"):
        resolve_resume_checkpoint(tmp_path, str(tmp_path / "checkpoint-8"))


def test_checkpoints_after_the_start_stop_being_resumable(tmp_path):
    write_checkpoint(tmp_path, 4)
    write_checkpoint(tmp_path, 8)
    write_checkpoint(tmp_path, 12)
    write_checkpoint(tmp_path, 16, complete=False)
    retire_checkpoints_after(tmp_path, 8)
    assert [step for step, _ in complete_checkpoints(tmp_path)] == [4, 8]
    assert (tmp_path / "checkpoint-12" / "model.safetensors").exists()  # kept until overwritten in place
    assert not (tmp_path / "checkpoint-16").exists()
    assert newest_complete_checkpoint(tmp_path) == tmp_path / "checkpoint-8"


def test_rotation_counts_only_complete_checkpoints_and_keeps_the_newest(tmp_path):
    for step in (2, 4, 6, 8):
        write_checkpoint(tmp_path, step)
    write_checkpoint(tmp_path, 10, complete=False)
    rotate_checkpoints(tmp_path, None)
    assert len(complete_checkpoints(tmp_path)) == 4
    rotate_checkpoints(tmp_path, 2, keep=str(tmp_path / "checkpoint-2"))
    assert [step for step, _ in complete_checkpoints(tmp_path)] == [2, 8]  # the best and the newest
    assert (tmp_path / "checkpoint-10").exists()  # not complete: neither counted nor deleted
    assert not (tmp_path / "checkpoint-4").exists() and not (tmp_path / "checkpoint-6").exists()
    rotate_checkpoints(tmp_path, 1)
    assert [step for step, _ in complete_checkpoints(tmp_path)] == [8]


def test_failed_save_message_names_the_intact_checkpoint(tmp_path):
    write_checkpoint(tmp_path, 4)
    write_checkpoint(tmp_path, 8, complete=False)
    full = OSError(errno.ENOSPC, "No space left on device")
    message = failed_save_message(tmp_path, 8, full)
    assert "saving checkpoint-8" in message and "No space left on device" in message
    assert f"the last complete checkpoint, {tmp_path / 'checkpoint-4'}, is intact" in message
    # A write error while checkpoint-8 was being written, even one that is not an OSError (torch.save's).
    assert failed_save_message(tmp_path, 8, RuntimeError("file write failed")) is not None
    # An error of another kind, at a step whose save never started, is not a failed save.
    assert failed_save_message(tmp_path, 12, RuntimeError("eval went wrong")) is None


def test_output_dir_check_refuses_an_unwritable_folder_and_a_full_disk(tmp_path):
    check_output_dir(tmp_path / "new" / "out", needed_bytes=1)
    assert (tmp_path / "new" / "out").is_dir() and not list((tmp_path / "new" / "out").iterdir())
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    with pytest.raises(ValueError, match=r"--output_dir .*a_file/out is not writable"):
        check_output_dir(blocker / "out", needed_bytes=1)
    with pytest.raises(ValueError, match=r"GiB free, and checkpoints need about .* free space"):
        check_output_dir(tmp_path, needed_bytes=2**80)


def test_checkpoint_size_counts_weights_and_adam_moments():
    model = torch.nn.Linear(10, 10)  # 110 fp32 parameters
    assert checkpoint_bytes(model) == 3 * 110 * 4


def test_resume_command_replaces_any_resume_flag_with_auto():
    argv = ["--output_dir", "out dir", "--resume_from_checkpoint", "out dir/checkpoint-4", "--lr", "1e-3",
            "--resume_from_checkpoint=x"]
    command = resume_command("run_mlm.py", argv, env={})
    assert shlex.split(command) == ["python", "run_mlm.py", "--output_dir", "out dir", "--lr", "1e-3",
                                    "--resume_from_checkpoint", "auto"]


@pytest.mark.parametrize(
    ("env", "launch"),
    [
        ({}, ["python"]),
        ({"TORCHELASTIC_RUN_ID": "x", "LOCAL_WORLD_SIZE": "2", "GROUP_WORLD_SIZE": "1"},
         ["torchrun", "--nproc_per_node", "2"]),
        ({"TORCHELASTIC_RUN_ID": "x", "LOCAL_WORLD_SIZE": "8", "GROUP_WORLD_SIZE": "4"},
         ["torchrun", "--nproc_per_node", "8", "--nnodes", "4"]),
        ({"LOCAL_SIZE": "4", "CROSS_SIZE": "1", "WORLD_SIZE": "4"}, ["deepspeed", "--num_gpus", "4"]),
        ({"LOCAL_SIZE": "8", "CROSS_SIZE": "2", "WORLD_SIZE": "16"}, ["deepspeed", "--num_gpus", "8", "--num_nodes", "2"]),
    ],
)
def test_resume_command_uses_the_launcher_that_started_the_run(env, launch):
    command = resume_command("run_mlm.py", ["--deepspeed", "ds_configs/zero1.json"], env=env)
    assert shlex.split(command) == [*launch, "run_mlm.py", "--deepspeed", "ds_configs/zero1.json",
                                    "--resume_from_checkpoint", "auto"]


def test_resume_command_leaves_the_hub_token_out():
    argv = ["--output_dir", "out", "--hub_token", "hf_SECRET", "--push_to_hub", "--hub_token=hf_SECRET2"]
    command = resume_command("run_mlm.py", argv, env={})
    assert "hf_SECRET" not in command
    assert shlex.split(command) == ["python", "run_mlm.py", "--output_dir", "out", "--push_to_hub",
                                    "--resume_from_checkpoint", "auto"]
