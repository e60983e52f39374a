"""`python -m budget_bert.cooldown OUTPUT_DIR`: cool a wsd run's marker checkpoints down into shorter-budget models.

    python -m budget_bert.cooldown out                       # every marker checkpoint of the run in out/
    python -m budget_bert.cooldown out --markers 0.4,0.6 --cooldown_proportion 0.2
    torchrun --nproc_per_node 4 -m budget_bert.cooldown out --markers 0.4      # one marker per job on spare GPUs
    deepspeed --num_gpus 4 --module budget_bert.cooldown out --markers 0.6
    python -m budget_bert.cooldown out --markers 0.4 -- --per_device_train_batch_size 16   # run_mlm.py flags

Each cooldown is a `run_mlm.py` run of the original flags with the budget `B = t / (1 - P)`, resumed from the marker
checkpoint at `t` (see `budget_bert.cooldown.cooldown_runs`), in `OUTPUT_DIR/cooldown/budget-<B>h/`; it ends in the
snapshot `cooldown-budget-<B>h` there, pushed with `--push_to_hub` to the branch of that name. The main run does not
wait for it. Preempted (SIGTERM/SIGINT), it saves a checkpoint and exits with 75; the same command resumes it, and a
finished cooldown is skipped.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys

from transformers import set_seed
from transformers.utils import logging

from budget_bert.cli import UsageError, run_cli, setup_logging
from budget_bert.cooldown.cooldown_runs import Cooldown, plan_cooldowns
from budget_bert.pretraining.build import build_pretraining
from budget_bert.pretraining.pretraining_arguments import parse_pretraining_args
from budget_bert.pretraining.resume import launcher


logger = logging.get_logger(__name__)

PROG = "python -m budget_bert.cooldown"


def build_parser() -> argparse.ArgumentParser:
    """The command's parser; `run_mlm.py` flags for every cooldown come after `--`."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Cool the marker checkpoints of a run_mlm.py --curve wsd run down into the models of shorter "
        "budgets: each is a run_mlm.py run of the run's flags with the budget t / (1 - P), resumed from the marker "
        "checkpoint at t. Flags after -- go to every cooldown's run_mlm.py, in place of the run's own.",
    )
    parser.add_argument("output_dir", help="The --output_dir of the run_mlm.py --curve wsd run.")
    parser.add_argument(
        "--markers", default=None,
        help="Comma-separated markers (fractions of the run's budget, as in --finetune_time_markers) to cool down; "
        "by default every marker with a marker checkpoint.",
    )
    parser.add_argument(
        "--cooldown_proportion", type=float, default=None,
        help="P: the share of the new budget spent cooling down; by default the run's own --cooldown_proportion.",
    )
    parser.add_argument(
        "--push_to_hub", action="store_true",
        help="Push each cooled-down snapshot to the Hub, on a branch of its own (cooldown-budget-<B>h).",
    )
    parser.add_argument("--hub_model_id", default=None,
                        help="The repo to push to; by default the run's own --hub_model_id.")
    parser.add_argument("--local_rank", type=int, default=None, help=argparse.SUPPRESS)  # the deepspeed launcher's
    return parser


def _markers(text: str | None) -> list[float] | None:
    if text is None:
        return None
    try:
        return [float(marker) for marker in text.split(",") if marker.strip()]
    except ValueError:
        raise UsageError(f"--markers {text}: give comma-separated numbers, e.g. 0.4,0.6") from None


def _run_flag(flags, name: str) -> str | None:
    for position, token in enumerate(flags):
        if token == f"--{name}" and position + 1 < len(flags):
            return flags[position + 1]
        if token.startswith(f"--{name}="):
            return token.split("=", 1)[1]
    return None


def resume_line(argv: list[str], env=os.environ) -> str:
    """
    This command line, under the launcher that started it (`-m`, or deepspeed's `--module`), less the
    `--local_rank` that the deepspeed launcher adds.
    """
    command = launcher(env)
    module = ["--module" if command[0] == "deepspeed" else "-m", "budget_bert.cooldown"]
    return shlex.join([*command, *module, *(token for token in argv if not token.startswith("--local_rank"))])


def run_cooldown(cooldown: Cooldown, flags: list[str], clock_factory, resume_line: str) -> None:
    """
    Train one cooldown: `run_mlm.py`'s parse, build, train and finish on `flags`, on the clock
    `clock_factory(budget_seconds)` when given; preempted, it prints `resume_line` and exits with 75.
    """
    args = parse_pretraining_args(flags)
    logger.info(
        f"Cooling {cooldown.checkpoint} ({cooldown.start_seconds / 3600:.4g} h) down to the budget "
        f"{cooldown.budget_seconds / 3600:.4g} h in {cooldown.output_dir}."
    )
    set_seed(args.training.seed)
    clock = None if clock_factory is None else clock_factory(args.budget.budget_seconds)
    pretraining = build_pretraining(args, clock, resume_line)
    try:
        result = pretraining.train()
        pretraining.finish(result)
    finally:
        pretraining.close()


def main(argv: list[str] | None = None, clock_factory=None) -> list[Cooldown]:
    """
    Plan the cooldowns (every marker checked first), then run those not finished yet, one after the other; returns
    the cooldowns. `clock_factory(budget_seconds)` makes each cooldown's budget clock (tests pass a manual one).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    own, extra = (argv[: argv.index("--")], argv[argv.index("--") + 1 :]) if "--" in argv else (argv, [])
    args = build_parser().parse_args(own)
    setup_logging()
    cooldowns = plan_cooldowns(args.output_dir, _markers(args.markers), args.cooldown_proportion)
    pending = [cooldown for cooldown in cooldowns if not cooldown.finished]
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and len(pending) > 1:
        raise UsageError(
            f"{len(pending)} cooldowns to run under a launcher: give one marker per job (--markers "
            f"{pending[0].marker.removeprefix('marker-')}); several jobs can run side by side"
        )
    hub_model_id = None
    if args.push_to_hub:
        hub_model_id = args.hub_model_id or _run_flag(cooldowns[0].run_flags, "hub_model_id")
        if hub_model_id is None:
            raise UsageError("--push_to_hub: the run had no --hub_model_id; give one")
    if args.local_rank is not None:
        extra.append(f"--local_rank={args.local_rank}")
    for cooldown in cooldowns:
        if not cooldown.finished:
            run_cooldown(cooldown, cooldown.flags(hub_model_id, extra), clock_factory, resume_line(argv))
        if int(os.environ.get("RANK", "0")) == 0:
                print(f"{cooldown.marker} ({cooldown.start_seconds / 3600:.4g} h) cooled down to the budget "
                  f"{cooldown.budget_seconds / 3600:.4g} h: {cooldown.snapshot_dir}", flush=True)
    return cooldowns


def cli() -> None:
    """`python -m budget_bert.cooldown`."""
    run_cli(PROG, main)
