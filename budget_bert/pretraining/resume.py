"""What a run tells its scheduler and its user when it starts and ends: fresh or resumed, preempted (a distinct exit
code and the command that resumes it), or finished already."""

import contextlib
import json
import os
import shlex
import signal
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path

from safetensors import safe_open
from transformers import PreTrainedModel
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR
from transformers.utils import logging

from budget_bert.hub.redaction import is_secret_name
from trainer_callbacks import BudgetCallback
from trainer_callbacks.checkpoints import AUTO
from trainer_callbacks.clock import BudgetClock


logger = logging.get_logger(__name__)

# EX_TEMPFAIL of sysexits.h: a temporary failure, worth retrying. A requeue script tells it from a crash (1) and from
# a finished run (0).
EXIT_PREEMPTED = 75
PREEMPTION_NOTE = "PREEMPTED"
"""The file a preempted run leaves in its output_dir (holding the line it printed) and its next start removes:
torchrun exits 1 and the deepspeed launcher dies with the signal whatever their workers exit with, so a requeue
script that runs a launcher looks for this file."""

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
    `HF_TOKEN` or the saved login. So is the `--local_rank` that the deepspeed launcher gives each worker: it adds
    its own again.
    """
    kept, skip_value = [], False
    for token in argv:
        name, has_value = token.split("=", 1)[0], "=" in token
        if skip_value:
            skip_value = False
        elif name in (_RESUME_FLAG, "--local_rank") or (name.startswith("--") and is_secret_name(name)):
            # `--flag value` drops the value too; `--flag=value` is one token.
            skip_value = not has_value
        else:
            kept.append(token)
    return shlex.join([*launcher(env), script, *kept, _RESUME_FLAG, AUTO])


def write_preemption_note(output_dir: str, message: str) -> None:
    """Leave `message`, the line a preempted run printed, in `output_dir/PREEMPTED` (see `PREEMPTION_NOTE`)."""
    Path(output_dir, PREEMPTION_NOTE).write_text(message + "\n")


def preemption_message(global_step: int, checkpoint: str, clock: BudgetClock, command: str) -> str:
    """The one line a preempted run prints: where it stopped, the budget used so far, and how to resume."""
    return (
        f"Preempted at step {global_step} after {clock.elapsed / 3600:.4g} h of the "
        f"{clock.budget_seconds / 3600:.4g} h budget; checkpoint saved in {checkpoint}. Resume with: {command}"
    )


def _saved_state(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def finished_run_message(output_dir: str, resume_from: str | None, stop_seconds: float) -> str | None:
    """
    The line that says `output_dir` holds a run that already finished, or `None`.

    A run is finished when it wrote its final state and results (`trainer_state.json`, `train_results.json`) at
    the step of the checkpoint it would resume from (or with no checkpoint left), having used at least the
    `stop_seconds` of budget this command stops at (the budget, or its `--early_exit_time_marker`): rerunning its
    command must change nothing (training on would overrun the budget, replace the `end` snapshot and overwrite the
    results with those of one step). A larger budget, or the command without its early exit, goes on.
    """
    final = _saved_state(Path(output_dir, "trainer_state.json"))
    if final is None or not Path(output_dir, "train_results.json").is_file():
        return None
    checkpoint = _saved_state(Path(resume_from, "trainer_state.json")) if resume_from else final
    if checkpoint is None or checkpoint.get("global_step") != final.get("global_step"):
        return None
    clock = BudgetCallback.saved_clock(final)
    if clock is None or clock.elapsed < stop_seconds:
        return None
    return (
        f"--output_dir {output_dir} holds a finished run (step {final['global_step']}, {clock.elapsed / 3600:.4g} h "
        f"of its {clock.budget_seconds / 3600:.4g} h budget used): nothing to do. Pass --overwrite_output_dir to "
        "train again from scratch, or a larger --total_training_time to go on."
    )


def checkpoint_shape_problem(checkpoint: str | None, model: PreTrainedModel, output_dir: str) -> str | None:
    """
    Why `model` cannot resume from `checkpoint` (a weight of another shape, or one that only one of them has: the
    flags or defaults that shape the model changed since it was saved), as one line naming the way out, or `None`.
    Read from the checkpoint's safetensors header, without loading the weights; a checkpoint without
    `model.safetensors` (DeepSpeed ZeRO-3) is not checked here.
    """
    weights = Path(checkpoint or "", "model.safetensors")
    if checkpoint is None or not weights.is_file():
        return None
    expected = {name: list(tensor.shape) for name, tensor in model.state_dict().items()}
    parameters = {name for name, _ in model.named_parameters(remove_duplicate=False)}
    tied = dict(getattr(model, "all_tied_weights_keys", None) or {})
    partners = {**tied, **{source: target for target, source in tied.items()}}
    difference = None
    with safe_open(weights, framework="pt") as saved:
        names = set(saved.keys())
        for name in sorted(names):
            shape = list(saved.get_slice(name).get_shape())
            if name not in expected and partners.get(name) not in expected:
                difference = f"{name} is in it, not in this run's model"
            elif name in expected and shape != expected[name]:
                difference = f"{name} is {shape} there, {expected[name]} in this run's model"
            if difference:
                break
    missing = sorted(name for name in parameters if name not in names and partners.get(name) not in names)
    if difference is None and missing:
        difference = f"this run's model has {missing[0]}, which it lacks"
    if difference is None:
        return None
    return (
        f"{checkpoint} holds a model of another shape ({difference}): resume it with the flags and code that trained "
        f"it, or pass --overwrite_output_dir to start afresh in --output_dir {output_dir} (or pick another "
        "--output_dir)"
    )


def start_message(resume_from: str | None, budget_seconds: float) -> str:
    """The line that says whether a run starts fresh or resumes, from which checkpoint, with how much budget used."""
    if resume_from is None:
        return f"Starting fresh, with the whole budget of {budget_seconds / 3600:.4g} h."
    state = _saved_state(Path(resume_from, "trainer_state.json")) or {}
    clock = BudgetCallback.saved_clock(state)
    step = state.get("global_step", Path(resume_from).name.removeprefix(f"{PREFIX_CHECKPOINT_DIR}-"))
    used = f", {clock.elapsed / 3600:.4g} h of the {budget_seconds / 3600:.4g} h budget already used" if clock else ""
    return f"Resuming from {resume_from} (step {step}{used})."


def announce_start(args) -> bool:
    """
    Say, on the main process, whether the run of the parsed `args` (`PretrainingArguments`) starts fresh, resumes
    (from which checkpoint, with how much of the budget used) or finished already (see `finished_run_message`).
    Returns whether there is anything to train. The start goes out at warning level, as HuggingFace's examples log
    the process setup, so that the default level shows it.
    """
    resume_from, budget_seconds = args.training.resume_from_checkpoint, args.budget.budget_seconds
    finished = None
    if not args.budget.overwrite_output_dir:
        finished = finished_run_message(args.training.output_dir, resume_from, args.budget.stop_seconds)
    if args.training.process_index == 0:
        Path(args.training.output_dir, PREEMPTION_NOTE).unlink(missing_ok=True)
        if finished is not None:
            print(finished, flush=True)
        else:
            logger.warning(start_message(resume_from, budget_seconds))
    return finished is None


@contextlib.contextmanager
def preempted_before_training(command: str, output_dir: str, announce: bool = True) -> Iterator[None]:
    """
    While the data and the model are prepared, until the Trainer's own handling takes over (the
    `PreemptionCallback`, from train begin to train end), SIGTERM and SIGINT end the run with `EXIT_PREEMPTED` and a
    line saying there is nothing to save and how to rerun (`command`; printed, and left in `output_dir` as the
    preemption note, when `announce`), instead of the signal's silent default (exit 143): a requeue rule on 75 then
    holds from the job's first second.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handle(signum: int, frame) -> None:
        if announce:
            message = (f"Received {signal.Signals(signum).name} before training started: nothing to save yet. Run "
                       f"it again with: {command}")
            print(message, flush=True)
            write_preemption_note(output_dir, message)
        raise SystemExit(EXIT_PREEMPTED)

    previous = {signum: signal.signal(signum, handle) for signum in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
