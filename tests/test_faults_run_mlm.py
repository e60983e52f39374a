"""run_mlm.py faults a cluster user meets: a save failing in one of two processes, a checkpoint changed in place,
the command of a finished run run again, a signal before training starts.

Runs are tiny, on the fake clock of the crash tests (one second per step), forked from their fork server.
"""

import errno
import functools
import os
import shutil
import signal
import sys
import time
from pathlib import Path

import pytest
import torch
from datasets import load_from_disk

from budget_bert.cli import run_cli
from budget_bert.pretraining.resume import EXIT_PREEMPTED, PREEMPTION_NOTE
from trainer_callbacks.checkpoints import complete_checkpoints
from test_crash_run_mlm import (  # noqa: F401 - fixture
    ONE_THREAD, child_setup, finish, fork_server, logged_steps, run_mlm_flags,
)
from pretraining_fixtures import REPO, fake_clock, free_port, prepared_data, wait_until  # noqa: F401 - fixture


def _child(argv: list[str], log_path: str, env: dict[str, str], fault: str | None) -> None:
    """
    `run_mlm.main(argv)` on the fake clock, its output in `log_path`, with a `fault` planted: "rank_save" (the
    process of rank 1 fails to write its RNG state at the second save, then takes forever to exit, as a process can:
    NCCL teardown, an upload to finish) or "signal_while_preparing" (a SIGTERM while the raw text is prepared).
    """
    child_setup(env, log_path)
    if fault == "rank_save" and env.get("RANK") == "1":
        original_save, saves = torch.save, []

        def save(obj, f, *args, **kwargs):
            if Path(str(f)).name.startswith("rng_state"):
                saves.append(f)
                if len(saves) > 1:
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(f))
            return original_save(obj, f, *args, **kwargs)

        torch.save = save
        torch.distributed.destroy_process_group = lambda *args, **kwargs: time.sleep(600)
    if fault == "signal_while_preparing":
        from budget_bert.pretraining import build

        def preparing(*args, **kwargs):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(60)

        build.build_mlm_datasets = preparing
    sys.path.insert(0, str(REPO))
    import run_mlm

    run_cli("run_mlm.py", functools.partial(run_mlm.main, clock=fake_clock(argv)), argv)


def start(fork_server, argv, log: Path, env=None, fault=None):
    """Start `_child` in a process forked from the crash tests' fork server."""
    process = fork_server.Process(target=_child, args=(argv, str(log), {**ONE_THREAD, **(env or {})}, fault))
    process.start()
    return process


def test_a_save_failing_in_one_process_ends_the_other_at_once(prepared_data, tmp_path, fork_server):  # noqa: F811
    output_dir = tmp_path / "out"
    argv = run_mlm_flags(prepared_data, output_dir, 600.0)
    env = {"WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port())}
    logs = [tmp_path / f"rank{rank}.log" for rank in range(2)]
    processes = [
        start(fork_server, argv, logs[rank], {**env, "RANK": str(rank), "LOCAL_RANK": str(rank)}, "rank_save")
        for rank in range(2)
    ]
    try:
        assert finish(processes[0]) == 1
        assert processes[1].is_alive()  # rank 0 did not wait for rank 1 to exit
    finally:
        processes[1].kill()
    first, second = [step for step, _ in complete_checkpoints(output_dir)] + [None]
    assert second is None  # the checkpoint rank 1 could not finish is not marked complete
    line = next(line for line in logs[0].read_text().splitlines() if line.startswith("run_mlm.py: error:"))
    assert "failed (CheckpointSaveError: another process could not write its part" in line
    assert f"the last complete checkpoint, {output_dir / f'checkpoint-{first}'}, is intact" in line


def _files(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(path.relative_to(folder)): (path.stat().st_mtime_ns, path.stat().st_size)
            for path in folder.rglob("*") if path.is_file()}


def test_the_command_of_a_finished_run_run_again_changes_nothing(prepared_data, tmp_path, fork_server):  # noqa: F811
    output_dir = tmp_path / "out"
    # At the default log level: the line that says how the run starts must show there.
    argv = [flag for flag in run_mlm_flags(prepared_data, output_dir, 30.0, "--finetune_time_markers", "0.5")
            if flag not in ("--log_level", "info")]
    assert finish(start(fork_server, argv, tmp_path / "first.log")) == 0
    assert "Starting fresh, with the whole budget of" in (tmp_path / "first.log").read_text()
    before = _files(output_dir)

    assert finish(start(fork_server, argv, tmp_path / "again.log")) == 0
    text = (tmp_path / "again.log").read_text()
    assert f"--output_dir {output_dir} holds a finished run (step " in text and "nothing to do" in text
    assert logged_steps(tmp_path / "again.log") == 0
    assert _files(output_dir) == before


def test_a_resume_falls_back_past_a_checkpoint_changed_in_place(prepared_data, tmp_path, fork_server):  # noqa: F811
    output_dir = tmp_path / "out"
    argv = run_mlm_flags(prepared_data, output_dir, 300.0)
    process = start(fork_server, argv, tmp_path / "first.log")
    wait_until(lambda: len(complete_checkpoints(output_dir)) >= 2, process, "two checkpoints")
    os.kill(process.pid, signal.SIGTERM)
    assert finish(process) == EXIT_PREEMPTED
    assert (output_dir / PREEMPTION_NOTE).read_text().startswith("Preempted at step")
    (previous, _), (_, folder) = complete_checkpoints(output_dir)[-2:]
    data = bytearray((folder / "optimizer.pt").read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped bit, the size kept
    (folder / "optimizer.pt").write_bytes(bytes(data))

    assert finish(start(fork_server, argv, tmp_path / "resumed.log")) == 0
    text = (tmp_path / "resumed.log").read_text()
    assert f"Skipping {folder}: it is not a complete checkpoint (optimizer.pt is not what was saved" in text
    assert f"Resuming from {output_dir / f'checkpoint-{previous}'} (step {previous}, " in text
    assert "h budget already used)" in text
    assert not (output_dir / PREEMPTION_NOTE).exists()


def test_a_signal_while_the_data_is_prepared_exits_75_with_a_message(prepared_data, tmp_path, fork_server):  # noqa: F811
    output_dir = tmp_path / "out"
    argv = run_mlm_flags(prepared_data, output_dir, 300.0)
    at = argv.index("--dataset_path")
    argv[at : at + 2] = ["--train_file", str(prepared_data.corpus), "--tokenizer_name", str(prepared_data.tokenizer)]
    assert finish(start(fork_server, argv, tmp_path / "run.log", fault="signal_while_preparing")) == EXIT_PREEMPTED
    line = "Received SIGTERM before training started: nothing to save yet. Run it again with: python run_mlm.py "
    assert line in (tmp_path / "run.log").read_text()
    assert (output_dir / PREEMPTION_NOTE).read_text().startswith(line)


def test_an_output_dir_inside_the_dataset_path_is_refused(prepared_data, tmp_path, capsys):  # noqa: F811
    sys.path.insert(0, str(REPO))
    import run_mlm

    argv = run_mlm_flags(prepared_data, prepared_data.dataset / "run", 60.0)
    with pytest.raises(SystemExit) as exited:
        run_cli("run_mlm.py", run_mlm.main, argv)
    assert exited.value.code == 2
    assert f"--output_dir {prepared_data.dataset / 'run'} is inside --dataset_path" in capsys.readouterr().err
    assert not (prepared_data.dataset / "run").exists()


def test_a_model_of_another_shape_than_the_checkpoints_is_one_line(prepared_data, tmp_path, fork_server):  # noqa: F811
    output_dir = tmp_path / "out"
    argv = run_mlm_flags(prepared_data, output_dir, 20.0)
    assert finish(start(fork_server, argv, tmp_path / "first.log")) == 0
    wider = run_mlm_flags(prepared_data, output_dir, 40.0)  # a longer budget: this run would go on
    at = wider.index("--hidden_size")
    wider[at + 1] = "32"
    assert finish(start(fork_server, wider, tmp_path / "again.log")) == 2
    line = (tmp_path / "again.log").read_text().strip().splitlines()[-1]
    assert line.startswith(f"run_mlm.py: error: {output_dir}/checkpoint-") and "holds a model of another shape" in line
    assert "--overwrite_output_dir" in line


def test_shards_with_ids_outside_the_vocabulary_are_one_line(prepared_data, tmp_path, fork_server):  # noqa: F811
    dataset = tmp_path / "prepared"
    splits = load_from_disk(str(prepared_data.dataset))
    splits["train"] = splits["train"].map(
        lambda example, index: {"input_ids": [prepared_data.vocab_size + 7, *example["input_ids"][1:]]}
        if index == 0 else example, with_indices=True,
    )
    splits.save_to_disk(str(dataset), num_shards={"train": prepared_data.num_shards, "validation": 1})
    for name in ("metadata.json", "tokenizer"):
        (shutil.copytree if name == "tokenizer" else shutil.copy)(prepared_data.dataset / name, dataset / name)
    argv = run_mlm_flags(prepared_data, tmp_path / "out", 20.0)
    argv[argv.index("--dataset_path") + 1] = str(dataset)
    assert finish(start(fork_server, argv, tmp_path / "run.log")) == 2
    line = (tmp_path / "run.log").read_text().strip().splitlines()[-1]
    assert line == (
        f"run_mlm.py: error: --dataset_path {dataset}: its train examples hold token id {prepared_data.vocab_size + 7}"
        f", outside the {prepared_data.vocab_size}-token vocabulary: the shards were not encoded with this tokenizer "
        "(or were changed); prepare the data again."
    )


def test_a_checkpoint_without_a_weight_of_this_runs_model_is_one_line(tmp_path):
    from budget_bert import BudgetBertConfig, BudgetBertForMaskedLM
    from budget_bert.pretraining.resume import checkpoint_shape_problem

    shape = dict(vocab_size=100, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=37,
                 qk_norm=False)
    BudgetBertForMaskedLM(BudgetBertConfig(**shape)).save_pretrained(tmp_path / "checkpoint-4")
    assert checkpoint_shape_problem(str(tmp_path / "checkpoint-4"), BudgetBertForMaskedLM(BudgetBertConfig(**shape)),
                                    str(tmp_path)) is None  # the tied decoder is saved once, under the embeddings
    with torch.device("meta"):
        other = BudgetBertForMaskedLM(BudgetBertConfig(**{**shape, "qk_norm": True}))  # a default changed since
    problem = checkpoint_shape_problem(str(tmp_path / "checkpoint-4"), other, str(tmp_path))
    assert "holds a model of another shape (this run's model has budget_bert.encoder.layer.0.attention.qk_norm" in problem


def test_a_changed_tokenizer_folder_is_named_not_a_flag_that_was_not_given(prepared_data, tmp_path, fork_server):  # noqa: F811
    from budget_bert.data.tokenization import train_wordpiece_tokenizer

    dataset = tmp_path / "prepared"
    shutil.copytree(prepared_data.dataset, dataset)
    shutil.rmtree(dataset / "tokenizer")
    tokenizer = train_wordpiece_tokenizer([prepared_data.corpus], 100, dataset / "tokenizer", min_frequency=1)
    argv = run_mlm_flags(prepared_data, tmp_path / "out", 20.0)
    argv[argv.index("--dataset_path") + 1] = str(dataset)
    assert finish(start(fork_server, argv, tmp_path / "run.log")) == 2
    line = (tmp_path / "run.log").read_text().strip().splitlines()[-1]
    assert line.endswith(f"but the tokenizer has {len(tokenizer)}: its tokenizer/ folder was changed after "
                         "preparation: prepare the data again.")
