"""The resume command a preempted run prints keeps every flag but the secrets and the resume flag."""

import shlex

import pytest

from budget_bert.pretraining.resume import resume_command


@pytest.mark.parametrize(
    ("argv", "kept"),
    [
        (["--hub_token=hf_X", "--do_validation"], ["--do_validation"]),
        (["--hub_token=hf_X", "--hub_push_timeout", "20"], ["--hub_push_timeout", "20"]),
        (["--hub_token", "hf_X", "--hub_push_timeout=20"], ["--hub_push_timeout=20"]),
        (["--resume_from_checkpoint=out/checkpoint-4", "--do_validation"], ["--do_validation"]),
        (["--local_rank=1", "--do_validation"], ["--do_validation"]),  # the deepspeed launcher's, given again
        (["--local_rank", "0", "--do_validation"], ["--do_validation"]),
    ],
)
def test_the_resume_command_keeps_every_flag_but_the_secrets_and_the_launchers(argv, kept):
    command = resume_command("run_mlm.py", ["--output_dir", "out", *argv], env={})
    assert "hf_X" not in command
    assert shlex.split(command) == ["python", "run_mlm.py", "--output_dir", "out", *kept,
                                    "--resume_from_checkpoint", "auto"]
