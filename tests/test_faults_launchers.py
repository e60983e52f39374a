"""What a SLURM requeue script sees when the job is preempted, under each launcher (README: "Exit codes").

SLURM sends SIGTERM to every process of the job: the batch shell, the launcher and the workers. The script under test
is the README's: it traps SIGTERM (so that the shell waits for the launcher instead of dying with the signal) and
turns "failed, and left a preemption note" into 75, since torchrun exits 1 whatever its workers exit with.
"""

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from budget_bert.pretraining.resume import EXIT_PREEMPTED, PREEMPTION_NOTE
from trainer_callbacks.checkpoints import complete_checkpoints
from pretraining_fixtures import REPO, TINY_MODEL_FLAGS, WAIT_SECONDS, free_port, prepared_data, wait_until  # noqa: F401

REQUEUE_SCRIPT = """
trap 'echo "SIGTERM: waiting for the run to save its checkpoint"' TERM
"$@"
code=$?
echo "launcher exit code: $code"
if [ $code -ne 0 ] && [ -f "$OUTPUT_DIR/PREEMPTED" ]; then code=75; fi
exit $code
"""


@pytest.mark.parametrize(("launcher", "launcher_exit"), [("python", EXIT_PREEMPTED), ("torchrun", 1)])
def test_a_preempted_job_exits_75_from_the_requeue_script(prepared_data, tmp_path, launcher, launcher_exit):  # noqa: F811
    output_dir = tmp_path / "out"
    bin_dir = Path(sys.executable).parent
    start = [sys.executable] if launcher == "python" else [
        str(bin_dir / "torchrun"), "--nproc_per_node", "2", "--master_port", str(free_port())]
    command = [
        *start, "run_mlm.py", "--dataset_path", str(prepared_data.dataset), "--output_dir", str(output_dir),
        *TINY_MODEL_FLAGS, "--train_micro_batch_size_per_gpu", "8", "--total_training_time", "1",
        "--print_steps", "1", "--disable_tqdm", "true",
    ]
    log = tmp_path / "job.log"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OUTPUT_DIR": str(output_dir)}
    with log.open("w") as out:
        job = subprocess.Popen(["bash", "-c", REQUEUE_SCRIPT, "job", *command], cwd=REPO, env=env, stdout=out,
                               stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_until(lambda: "{'loss'" in log.read_text(), job, "the first step")
            os.killpg(job.pid, signal.SIGTERM)  # as SLURM does: every process of the job
            assert job.wait(timeout=WAIT_SECONDS) == EXIT_PREEMPTED, log.read_text()[-3000:]
        finally:
            if job.poll() is None:
                os.killpg(job.pid, signal.SIGKILL)
    assert f"launcher exit code: {launcher_exit}" in log.read_text()
    assert (output_dir / PREEMPTION_NOTE).read_text().startswith("Preempted at step")
    assert complete_checkpoints(output_dir)
