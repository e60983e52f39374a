"""Checkpoint faults: files changed after they were saved, their sizes kept (a resume verifies the content and
falls back), and a save that fails in one of several processes (every process stops at once)."""

import json
import logging
import multiprocessing
import time
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import save_file
from transformers import TrainerControl, TrainerState

from trainer_callbacks.checkpoints import (
    COMPLETE_MARKER,
    CheckpointSaveError,
    CompleteCheckpointCallback,
    incompleteness,
    mark_complete,
    resolve_resume_checkpoint,
)
from pretraining_fixtures import free_port


def write_real_checkpoint(output_dir, step):
    """A `checkpoint-<step>` with the files a resume loads, in their real formats, marked complete."""
    folder = output_dir / f"checkpoint-{step}"
    folder.mkdir(parents=True)
    save_file({"weight": torch.arange(256, dtype=torch.float32) + step}, str(folder / "model.safetensors"))
    torch.save({"state": {0: {"exp_avg": torch.ones(256) * step}}}, folder / "optimizer.pt")
    TrainerState(global_step=step).save_to_json(str(folder / "trainer_state.json"))
    mark_complete(folder, step)
    return folder


def garble(path, offset_from_end=64):
    """Change bytes of `path` in place, keeping its size (a bit flip on disk, a bad copy)."""
    data = bytearray(path.read_bytes())
    position = len(data) - offset_from_end if path.suffix != ".json" else 0
    for index in range(position, position + 8):
        data[index] ^= 0xFF
    path.write_bytes(bytes(data))


def drop_digests(folder):
    """Turn the marker into one written before digests were recorded (files and sizes only)."""
    marker = folder / COMPLETE_MARKER
    record = json.loads(marker.read_text())
    marker.write_text(json.dumps({"global_step": record["global_step"], "files": record["files"]}))


@pytest.mark.parametrize(
    ("name", "legacy_marker"),
    [
        ("model.safetensors", False),  # zeroed weights used to resume silently
        ("trainer_state.json", False),
        ("optimizer.pt", False),
        ("trainer_state.json", True),  # used to end every rerun in a traceback
        ("optimizer.pt", True),
    ],
)
def test_resume_falls_back_past_a_checkpoint_changed_in_place(tmp_path, caplog, name, legacy_marker):
    write_real_checkpoint(tmp_path, 4)
    newest = write_real_checkpoint(tmp_path, 8)
    if legacy_marker:
        drop_digests(newest)
    offset = 1024 if name == "optimizer.pt" else 64  # inside the tensor data, ahead of torch's zip directory
    garble(newest / name, offset)
    assert incompleteness(newest) is None  # the sizes, all a rotation looks at, still match

    caplog.set_level(logging.WARNING)
    assert resolve_resume_checkpoint(tmp_path, "auto") == str(tmp_path / "checkpoint-4")
    assert f"Skipping {newest}" in caplog.text and name in caplog.text
    with pytest.raises(ValueError, match=rf"checkpoint-8 is not a complete checkpoint \({name}.*checkpoint-4"):
        resolve_resume_checkpoint(tmp_path, str(newest))


def test_an_unchanged_checkpoint_verifies_with_either_marker(tmp_path):
    folder = write_real_checkpoint(tmp_path, 4)
    record = json.loads((folder / COMPLETE_MARKER).read_text())
    assert sorted(record["sha256"]) == sorted(record["files"]) == ["model.safetensors", "optimizer.pt",
                                                                    "trainer_state.json"]
    assert incompleteness(folder, verify_content=True) is None
    drop_digests(folder)
    assert incompleteness(folder, verify_content=True) is None
    assert resolve_resume_checkpoint(tmp_path, "auto") == str(folder)


def _save_with_one_failing_process(rank, port, output_dir, results):
    """One of two gloo processes at the end of a checkpoint save: rank 1's part failed, rank 0's was written."""
    torch.distributed.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    callback = CompleteCheckpointCallback()
    args = SimpleNamespace(should_save=rank == 0, output_dir=str(output_dir))
    state = TrainerState(global_step=5)
    callback.on_train_begin(args, state, TrainerControl())
    if rank == 1:
        callback.report_failed_save()
        results.put(("reported", rank))
        time.sleep(600)  # an exit that takes long (a push to finish, NCCL teardown): the others must not wait for it
    try:
        callback.on_save(args, state, TrainerControl())
        results.put(("saved", rank))
    except CheckpointSaveError as error:
        results.put((str(error), rank))


def test_a_save_that_fails_in_one_process_stops_the_others_at_once(tmp_path):
    (tmp_path / "checkpoint-5").mkdir()
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    port = free_port()
    processes = [
        context.Process(target=_save_with_one_failing_process, args=(rank, port, tmp_path, results))
        for rank in range(2)
    ]
    for process in processes:
        process.start()
    try:
        outcomes = dict((rank, outcome) for outcome, rank in (results.get(timeout=60) for _ in range(2)))
        assert outcomes[1] == "reported"
        assert outcomes[0] == "another process could not write its part (its own error says why)"
        assert processes[1].is_alive()  # rank 0 stopped without waiting for rank 1 to exit
    finally:
        for process in processes:
            process.kill()
    assert incompleteness(tmp_path / "checkpoint-5") is not None  # not marked complete
