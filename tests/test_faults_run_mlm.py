"""run_mlm.py faults a cluster user meets: a save failing in one of two processes, a checkpoint changed in place,
the command of a finished run run again, a signal before training starts.

Runs are tiny, on the fake clock of the crash tests (one second per step), forked from their fork server.
"""

import errno
import functools
import os
import sys
import time
from pathlib import Path

import torch

from budget_bert.cli import run_cli
from trainer_callbacks.checkpoints import complete_checkpoints
from test_crash_run_mlm import ONE_THREAD, finish, fork_server, logged_steps, run_mlm_flags  # noqa: F401 - fixture
from pretraining_fixtures import REPO, fake_clock, free_port, prepared_data, wait_until  # noqa: F401 - fixture


def _rank_child(argv: list[str], log_path: str, env: dict[str, str], failing_rank: int) -> None:
    """One process of a two-process run whose rank `failing_rank` fails to write its RNG state at the second save,
    and then takes forever to exit (as a process can: NCCL teardown, an upload to finish)."""
    os.environ.update(env)
    torch.set_num_threads(1)
    log = open(log_path, "a", buffering=1)
    os.dup2(log.fileno(), 1)
    os.dup2(log.fileno(), 2)
    sys.stdout = sys.stderr = log
    if int(env["RANK"]) == failing_rank:
        original_save, saves = torch.save, []

        def save(obj, f, *args, **kwargs):
            if Path(str(f)).name.startswith("rng_state"):
                saves.append(f)
                if len(saves) > 1:
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(f))
            return original_save(obj, f, *args, **kwargs)

        torch.save = save
        torch.distributed.destroy_process_group = lambda *args, **kwargs: time.sleep(600)
    sys.path.insert(0, str(REPO))
    import run_mlm

    run_cli("run_mlm.py", functools.partial(run_mlm.main, clock=fake_clock(argv)), argv)


def test_a_save_failing_in_one_process_ends_the_other_at_once(prepared_data, tmp_path, fork_server):  # noqa: F811
    output_dir = tmp_path / "out"
    argv = run_mlm_flags(prepared_data, output_dir, 600.0)
    env = {**ONE_THREAD, "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port())}
    logs = [tmp_path / f"rank{rank}.log" for rank in range(2)]
    processes = [
        fork_server.Process(
            target=_rank_child, args=(argv, str(logs[rank]), {**env, "RANK": str(rank), "LOCAL_RANK": str(rank)}, 1)
        )
        for rank in range(2)
    ]
    for process in processes:
        process.start()
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
