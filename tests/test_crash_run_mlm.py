"""run_mlm.py on a shared cluster: preempted (SIGTERM), killed (SIGKILL, also mid-save), two processes, a full disk.

The run killed with SIGTERM is a real `python run_mlm.py` process on the real clock, resumed with the command it
prints. The other runs call `run_mlm.main` in processes forked from a fork server that has imported the libraries
once, which saves the import time of every start (a dozen starts here) and lets a test plant a fault in the child (a
slow or failing save). The runs that count steps (killed and resumed, two processes) run on a fake clock that moves
one second per step, so they take the same steps however busy the machine is.
"""

import errno
import functools
import json
import multiprocessing
import os
import random
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from budget_bert.cli import run_cli
from budget_bert.data.loading import load_prepared_dataset, steps_per_shard
from budget_bert.pretraining.resume import EXIT_PREEMPTED
from trainer_callbacks.checkpoints import checkpoint_folders, complete_checkpoints, incompleteness
from trainer_callbacks.snapshots import SNAPSHOTS_DIR, load_snapshots
from pretraining_fixtures import (  # noqa: F401 - fixture
    REPO,
    TINY_MODEL_FLAGS,
    WAIT_SECONDS,
    fake_clock,
    free_port,
    prepared_data,
    wait_until,
)


# One OpenMP thread per process: two spin against each other on a busy two-core machine and slow tiny steps a lot.
ONE_THREAD = {"OMP_NUM_THREADS": "1"}


def run_mlm_flags(data, output_dir: Path, budget_seconds: float, *extra: str) -> list[str]:
    """A tiny run: 8 examples a step and process, a training checkpoint every shard, every step logged."""
    return [
        "--dataset_path", str(data.dataset), "--output_dir", str(output_dir), *TINY_MODEL_FLAGS,
        "--lr", "1e-3", "--train_micro_batch_size_per_gpu", "8", "--warmup_proportion", "0.1",
        "--total_training_time", str(budget_seconds / 3600), "--num_epochs_between_checkpoints", "1",
        "--print_steps", "1", "--disable_tqdm", "true", "--log_level", "info", "--seed", "0", *extra,
    ]


def logged_steps(log: Path) -> int:
    """Training steps logged so far by the run writing `log` (its main process prints one dict per step)."""
    return log.read_text().count("{'loss'") if log.exists() else 0


def training_readings(output_dir: Path) -> list[tuple[int, float]]:
    """(step, budget seconds used) of every training step in the run's final log history."""
    history = json.loads((output_dir / "trainer_state.json").read_text())["log_history"]
    return [(entry["step"], entry["budget_elapsed_hours"] * 3600) for entry in history if "loss" in entry]


def assert_one_continuous_budget(output_dir: Path, budget_seconds: float) -> None:
    """Every step trained once, the budget used only grows across resumes, the run ends at the first step past it."""
    readings = training_readings(output_dir)
    steps, seconds = zip(*readings)
    assert list(steps) == list(range(1, len(steps) + 1))
    assert list(seconds) == sorted(seconds)
    assert seconds[-2] < budget_seconds <= seconds[-1]  # so the budget is overrun by less than the last step


# --- a real process, preempted with SIGTERM and resumed with the command it prints -------------------------------


def test_sigterm_saves_exits_75_and_the_printed_command_finishes_on_budget(prepared_data, tmp_path):
    budget = 8.0
    output_dir = tmp_path / "out"
    env = {**os.environ, **ONE_THREAD, "PYTHONUNBUFFERED": "1"}
    flags = run_mlm_flags(
        prepared_data, output_dir, budget, "--finetune_time_markers", "0.3,0.9", "--do_validation",
        "--validation_epochs", "1",
    )
    first_log = tmp_path / "first.log"
    with first_log.open("w") as log:
        process = subprocess.Popen(
            [sys.executable, "run_mlm.py", *flags], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT
        )
        try:
            wait_until(lambda: (output_dir / SNAPSHOTS_DIR / "marker-0.30").is_dir(), process, "the 0.3 marker")
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=WAIT_SECONDS) == EXIT_PREEMPTED
        finally:
            process.kill()
    text = first_log.read_text()
    preempted = [line for line in text.splitlines() if line.startswith("Preempted at step")]
    assert len(preempted) == 1, text[-3000:]
    step = int(re.match(r"Preempted at step (\d+)", preempted[0]).group(1))
    assert f"checkpoint saved in {output_dir}/checkpoint-{step}." in preempted[0]
    assert [s for s, _ in complete_checkpoints(output_dir)][-1] == step
    saved = json.loads((output_dir / f"checkpoint-{step}" / "trainer_state.json").read_text())
    used_before = saved["stateful_callbacks"]["BudgetCallback"]["attributes"]["elapsed_seconds"]
    assert 0.3 * budget <= used_before < budget
    # No final validation and no `end` snapshot for a run that is not over.
    assert sorted(p.name for p in (output_dir / SNAPSHOTS_DIR).iterdir()) == ["marker-0.30"]
    assert not (output_dir / "model.safetensors").exists()

    command = shlex.split(preempted[0].split("Resume with: ", 1)[1])
    assert command[:2] == ["python", "run_mlm.py"] and command[-2:] == ["--resume_from_checkpoint", "auto"]
    second = subprocess.run(
        [sys.executable, *command[1:]], cwd=REPO, env=env, capture_output=True, text=True, timeout=WAIT_SECONDS
    )
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert "There were missing keys" not in second.stdout + second.stderr  # the tied decoder is re-tied quietly

    assert_one_continuous_budget(output_dir, budget)
    readings = dict(training_readings(output_dir))
    assert readings[step + 1] >= used_before  # the time before the preemption counts...
    # ...and the time while no process ran (a whole process start, seconds) does not: the budget used by the second
    # part is at most the time its Trainer trained.
    train_runtime = json.loads((output_dir / "train_results.json").read_text())["train_runtime"]
    assert readings[max(readings)] - used_before <= train_runtime
    # The markers of an uninterrupted run, each taken once, at the first step past it.
    snapshots = {info.name: info for info in load_snapshots(output_dir)}
    assert sorted(snapshots) == ["end", "marker-0.30", "marker-0.90"]
    for name, marker in (("marker-0.30", 0.3), ("marker-0.90", 0.9)):
        at = snapshots[name].global_step
        assert readings[at - 1] < marker * budget <= readings[at]
    assert snapshots["marker-0.30"].global_step <= step < snapshots["marker-0.90"].global_step
    assert "Replacing the finetuning snapshot" not in text + second.stdout + second.stderr
    # Validation after every shard and once at the end, across the two parts: none skipped, none repeated.
    shard = steps_per_shard(load_prepared_dataset(prepared_data.dataset)[2].examples_per_shard, 8)
    history = json.loads((output_dir / "trainer_state.json").read_text())["log_history"]
    last = max(readings)
    assert [entry["step"] for entry in history if "eval_loss" in entry] == sorted({*range(shard, last + 1, shard), last})
    assert (output_dir / "model.safetensors").exists()


# --- runs in processes forked from a fork server ------------------------------------------------------------------


@pytest.fixture(scope="module")
def fork_server():
    """A fork server that imported the training stack once; each run forks from it with a clean state."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["budget_bert.pretraining.build", "transformers.trainer"])
    return context


def child_setup(env: dict[str, str], log_path: str) -> None:
    """In a forked test process: `env` on top of the environment, one thread, all output appended to `log_path`."""
    os.environ.update(env)
    torch.set_num_threads(1)
    log = open(log_path, "a", buffering=1)
    os.dup2(log.fileno(), 1)
    os.dup2(log.fileno(), 2)
    sys.stdout = sys.stderr = log


def _run_mlm_child(
    argv: list[str], log_path: str, env: dict[str, str], save_fault: str | None, on_fake_clock: bool
) -> None:
    """
    Run `run_mlm.main(argv)` with its output in `log_path` (on the fake clock if `on_fake_clock`); `save_fault`
    "stall" or "disk_full" breaks a save.
    """
    child_setup(env, log_path)
    if save_fault is not None:
        _plant_save_fault(save_fault)
    sys.path.insert(0, str(REPO))
    import run_mlm

    run_cli("run_mlm.py", functools.partial(run_mlm.main, clock=fake_clock(argv) if on_fake_clock else None), argv)


def _plant_save_fault(fault: str) -> None:
    """Make the Trainer's save of an optimizer state stall forever ("stall") or, from the second, fail ("disk_full")."""
    original_save, optimizer_saves = torch.save, []

    def save(obj, f, *args, **kwargs):
        if not str(f).endswith("optimizer.pt"):
            return original_save(obj, f, *args, **kwargs)
        optimizer_saves.append(f)
        if fault == "disk_full" and len(optimizer_saves) > 1:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(f))
        original_save(obj, f, *args, **kwargs)
        if fault == "stall":
            time.sleep(WAIT_SECONDS)

    torch.save = save


def start_run(fork_server, argv, log: Path, env=None, save_fault=None, on_fake_clock=False):
    """Start `run_mlm.main(argv)` in a process forked from `fork_server`, its output in `log`."""
    env = {**ONE_THREAD, **(env or {})}
    process = fork_server.Process(target=_run_mlm_child, args=(argv, str(log), env, save_fault, on_fake_clock))
    process.start()
    return process


def finish(process) -> int:
    """The exit code of `process`, once it has ended by itself."""
    process.join(timeout=WAIT_SECONDS)
    if process.exitcode is None:
        process.kill()
        pytest.fail("the run did not end")
    return process.exitcode


def half_written_checkpoint(output_dir: Path) -> Path | None:
    """A checkpoint folder whose save is under way: its optimizer state is written, its marker is not."""
    for _, path in checkpoint_folders(output_dir):
        if (path / "optimizer.pt").exists() and incompleteness(path) is not None:
            return path
    return None


def test_sigkill_anywhere_resumes_from_a_complete_checkpoint_and_keeps_the_budget(prepared_data, tmp_path, fork_server):
    budget = 40.0  # fake seconds: about 40 steps
    output_dir = tmp_path / "out"
    argv = run_mlm_flags(prepared_data, output_dir, budget)
    rng = random.Random(7)
    # Kills after a random number of steps and a random part of a step (mid-step, mid-log, mid-save, mid-rotation),
    # and one while a checkpoint is half written.
    plan = [("steps", rng.randint(3, 20), rng.uniform(0, 0.05)) for _ in range(3)]
    plan.insert(1, ("mid_save", None, None))
    for attempt, (kind, steps, delay) in enumerate(plan):
        newest = complete_checkpoints(output_dir)[-1:]
        newest_step = newest[0][0] if newest else 0
        # A folder half written by an earlier kill, after the newest complete checkpoint, must be skipped.
        skipped = [path for step, path in checkpoint_folders(output_dir) if step > newest_step]
        log = tmp_path / f"attempt-{attempt}.log"
        process = start_run(
            fork_server, argv, log, save_fault="stall" if kind == "mid_save" else None, on_fake_clock=True
        )
        if kind == "mid_save":
            folder = wait_until(lambda: half_written_checkpoint(output_dir), process, "a checkpoint being saved")
        else:
            wait_until(lambda: logged_steps(log) >= steps, process, f"{steps} steps")
            time.sleep(delay)
        process.kill()
        process.join()
        if kind == "mid_save":
            assert incompleteness(folder) is not None
        text = log.read_text()
        if newest:
            assert f"Resuming from {newest[0][1]}, the newest complete checkpoint" in text
        for path in skipped:
            assert f"Skipping {path}: it is not a complete checkpoint" in text

    log = tmp_path / "last.log"
    assert finish(start_run(fork_server, argv, log, on_fake_clock=True)) == 0, log.read_text()[-3000:]
    assert_one_continuous_budget(output_dir, budget)
    assert all(incompleteness(path) is None for _, path in checkpoint_folders(output_dir))


def test_two_processes_stop_at_the_same_step_on_a_signal_to_one_and_on_the_budget(prepared_data, tmp_path, fork_server):
    budget = 30.0  # fake seconds: about 30 steps
    output_dir = tmp_path / "out"
    argv = run_mlm_flags(prepared_data, output_dir, budget, "--log_level_replica", "info")

    def start_pair(name):
        port = str(free_port())
        logs = [tmp_path / f"{name}-rank{rank}.log" for rank in range(2)]
        env = {"WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port}
        processes = [
            start_run(
                fork_server, argv, logs[rank], env={**env, "RANK": str(rank), "LOCAL_RANK": str(rank)},
                on_fake_clock=True,
            )
            for rank in range(2)
        ]
        return processes, logs

    processes, logs = start_pair("preempted")
    wait_until(lambda: logged_steps(logs[0]) >= 5, processes[0], "5 steps")
    os.kill(processes[1].pid, signal.SIGTERM)  # a signal to one process only
    assert [finish(p) for p in processes] == [EXIT_PREEMPTED, EXIT_PREEMPTED]
    texts = [log.read_text() for log in logs]
    steps = {int(m) for text in texts for m in re.findall(r"Interrupted at step (\d+)", text)}
    assert len(steps) == 1, steps
    step = steps.pop()
    assert f"Preempted at step {step}" in texts[0] and "Preempted at step" not in texts[1]
    assert [s for s, _ in checkpoint_folders(output_dir)][-1] == step
    checkpoint = output_dir / f"checkpoint-{step}"
    assert incompleteness(checkpoint) is None
    assert (checkpoint / "rng_state_0.pth").exists() and (checkpoint / "rng_state_1.pth").exists()

    processes, logs = start_pair("resumed")
    assert [finish(p) for p in processes] == [0, 0]
    steps = {int(m) for log in logs for m in re.findall(r"Budget spent at step (\d+)", log.read_text())}
    assert len(steps) == 1, steps
    step = steps.pop()
    assert [s for s, _ in complete_checkpoints(output_dir)][-1] == step
    assert (output_dir / f"checkpoint-{step}" / "rng_state_1.pth").exists()
    assert_one_continuous_budget(output_dir, budget)


def test_a_failed_save_is_one_clear_error_and_keeps_the_last_checkpoint(prepared_data, tmp_path, fork_server):
    output_dir = tmp_path / "out"
    log = tmp_path / "run.log"
    process = start_run(fork_server, run_mlm_flags(prepared_data, output_dir, 600.0), log, save_fault="disk_full")
    assert finish(process) == 1
    first, second = [step for step, _ in checkpoint_folders(output_dir)]
    assert [step for step, _ in complete_checkpoints(output_dir)] == [first]
    assert (
        f"run_mlm.py: error: saving checkpoint-{second} in {output_dir} failed (OSError: [Errno 28] No space left on "
        "device" in log.read_text()
    )
    assert f"the last complete checkpoint, {output_dir / f'checkpoint-{first}'}, is intact" in log.read_text()


def test_an_unwritable_output_dir_is_refused_before_training(prepared_data, tmp_path, fork_server):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    log = tmp_path / "run.log"
    process = start_run(fork_server, run_mlm_flags(prepared_data, blocker / "out", 600.0), log)
    assert finish(process) == 2
    assert f"run_mlm.py: error: --output_dir {blocker / 'out'} is not writable" in log.read_text()
    assert logged_steps(log) == 0
