"""What a preempted run tells its scheduler and its user: a distinct exit code and the command that resumes it."""

import os
import shlex
from collections.abc import Mapping

from budget_bert.hub.redaction import is_secret_name
from trainer_callbacks.checkpoints import AUTO
from trainer_callbacks.clock import BudgetClock


# EX_TEMPFAIL of sysexits.h: a temporary failure, worth retrying. A requeue script tells it from a crash (1) and from
# a finished run (0).
EXIT_PREEMPTED = 75

_RESUME_FLAG = "--resume_from_checkpoint"


def launcher(env: Mapping[str, str]) -> list[str]:
    """The launcher that started this process, as the start of a command line: torchrun, deepspeed or python.

    Read from the variables each launcher sets for its workers. A multi-node run also needs its rendezvous (or
    hostfile) flags, which the workers cannot see; they are left for the user to add.
    """
    if "TORCHELASTIC_RUN_ID" in env:  # torchrun
        command = ["torchrun", "--nproc_per_node", env.get("LOCAL_WORLD_SIZE", "1")]
        nodes = env.get("GROUP_WORLD_SIZE", "1")
        return command + (["--nnodes", nodes] if nodes != "1" else [])
    if "LOCAL_SIZE" in env and "CROSS_SIZE" in env:  # the deepspeed launcher
        command = ["deepspeed", "--num_gpus", env["LOCAL_SIZE"]]
        nodes = env["CROSS_SIZE"]
        return command + (["--num_nodes", nodes] if nodes != "1" else [])
    return ["python"]


def resume_command(script: str, argv: list[str], env: Mapping[str, str] = os.environ) -> str:
    """The command line `script argv`, under the launcher that started this run (see `launcher`), with
    `--resume_from_checkpoint auto` in place of any resume flag it had.

    Secret flags (`--hub_token X`) are left out, since the line is printed: the resumed run takes the token from
    `HF_TOKEN` or the saved login.
    """
    kept, skip_value = [], False
    for token in argv:
        name, has_value = token.split("=", 1)[0], "=" in token
        if skip_value:
            skip_value = False
        elif name == _RESUME_FLAG or (name.startswith("--") and is_secret_name(name)):
            # `--flag value` drops the value too; `--flag=value` is one token.
            skip_value = not has_value
        else:
            kept.append(token)
    return shlex.join([*launcher(env), script, *kept, _RESUME_FLAG, AUTO])


def preemption_message(global_step: int, checkpoint: str, clock: BudgetClock, command: str) -> str:
    """The one line a preempted run prints: where it stopped, the budget used so far, and how to resume."""
    return (
        f"Preempted at step {global_step} after {clock.elapsed / 3600:.4g} h of the "
        f"{clock.budget_seconds / 3600:.4g} h budget; checkpoint saved in {checkpoint}. Resume with: {command}"
    )
