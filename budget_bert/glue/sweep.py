"""The GLUE sweep: finetune one snapshot over a grid of tasks, learning rates, batch sizes and seeds.

Run it with the thin script at the repo root (it knows where run_glue.py is):

    python glue_sweep.py --model_name_or_path <snapshot> --output_dir sweeps/snap1 \\
        --tasks mrpc rte sst2 --learning_rates 5e-5 1e-4 --batch_sizes 16 32 --seeds 1 2 3 4 5 \\
        -- --num_train_epochs 3 --fp16            # run_glue.py flags for every run, after `--`

    python glue_sweep.py sweep.yaml [same flags, which override the file's] [-- run_glue.py flags]

A YAML file holds the same keys as the flags (`tasks: [mrpc, rte]`, `learning_rates: [5e-5, 1e-4]`, ...) plus
`run_glue_args`, a mapping of run_glue.py flags (`{num_train_epochs: 3, fp16: true}`). Every run gets, lowest
precedence first: `RECIPE_ARGS` (the academic-budget-bert README's finetuning command), `run_glue_args`, the
flags after `--`; the sweep itself sets the model, task, learning rate, batch size, seed and output folder.
Without `--data_dir` the data comes from the Hub; with it, from `<data_dir>/<task>/{train,validation,
validation_mismatched,test}.{csv,json,jsonl}`.

Runs go one after another into `<output_dir>/runs/<task>/lr<lr>_bs<bs>_seed<seed>/`, their logs into
`<output_dir>/logs/`. A run is finished when its `all_results.json` exists (run_glue.py writes it last), and
finished runs are skipped, so an interrupted sweep resumes by running the same command again; an unfinished run
starts over. Each run is a subprocess of run_glue.py (optionally under `--launcher`, e.g. `torchrun
--nproc_per_node 8`): a crash, an out-of-memory error or a hang-up kill leaves the sweep going, and each run
starts with fresh CUDA, accelerate/DeepSpeed and logging state. Callers of `run_sweep` may pass an in-process
runner instead (the tests do, to import torch once). The tables are written by `budget_bert.glue.results`.
"""

import shlex
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from transformers import HfArgumentParser
from transformers.utils import logging as hf_logging

from budget_bert.cli import setup_logging, usage_error
from budget_bert.glue.glue_arguments import DATA_EXTENSIONS, resolve_key_aliases
from budget_bert.glue.results import summarize, write_tables
from budget_bert.glue.runtime import RESULTS_FILE
from budget_bert.glue.tasks import GLUE_AVERAGE_TASKS, get_task

logger = hf_logging.get_logger(__name__)

# The academic-budget-bert README's finetuning command, less the flags the sweep sets per run; checkpoints
# are not saved (each run still saves its final model) since an unfinished run starts over anyway.
RECIPE_ARGS: dict[str, object] = {
    "max_seq_length": 128,
    "eval_strategy": "steps",
    "eval_steps": 50,
    "per_device_eval_batch_size": 32,
    "gradient_accumulation_steps": 1,
    "weight_decay": 0.01,
    "max_grad_norm": 1.0,
    "num_train_epochs": 5,
    "lr_scheduler_type": "polynomial",
    "warmup_steps": 50,
    "save_strategy": "no",
}

# run_glue.py flags the sweep sets itself, and the sweep flag to use instead.
SWEEP_CONTROLLED = {
    "model_name_or_path": "--model_name_or_path",
    "task_name": "--tasks",
    "learning_rate": "--learning_rates",
    "per_device_train_batch_size": "--batch_sizes",
    "seed": "--seeds",
    "output_dir": "--output_dir",
}
DATA_FILE_FLAGS = ("train", "validation", "validation_mismatched", "test")

Runner = Callable[[list[str], Path], None]


@dataclass
class SweepArguments:
    """What to sweep: the snapshot, the grid (tasks x learning rates x batch sizes x seeds), where to write."""

    model_name_or_path: str = field(metadata={"help": "The snapshot (or Hub model) to finetune in every run."})
    output_dir: str = field(metadata={"help": "Folder of the sweep: runs/, logs/ and results/ go in it."})
    tasks: list[str] = field(
        default_factory=lambda: list(GLUE_AVERAGE_TASKS),
        metadata={"help": "GLUE tasks to finetune on, any case; by default the eight of the GLUE average."},
    )
    learning_rates: list[float] = field(default_factory=lambda: [5e-5], metadata={"help": "Peak learning rates."})
    batch_sizes: list[int] = field(
        default_factory=lambda: [32], metadata={"help": "Per-device training batch sizes."}
    )
    seeds: list[int] = field(
        default_factory=lambda: [42, 43, 44, 45, 46],
        metadata={"help": "Seeds; each configuration runs once per seed (the paper uses 5 seeds)."},
    )
    data_dir: str | None = field(
        default=None,
        metadata={
            "help": "Local GLUE data: <data_dir>/<task>/train.csv, validation.csv (MNLI also "
            "validation_mismatched.csv), optional test.csv (or .json/.jsonl). Without it, the data comes from the Hub."
        },
    )
    launcher: str | None = field(
        default=None,
        metadata={
            "help": "Command that starts run_glue.py, e.g. 'torchrun --nproc_per_node 8'; without it, this Python."
        },
    )

    def __post_init__(self):
        problems = []
        tasks = []
        for name in self.tasks:
            try:
                tasks.append(get_task(name).name)
            except ValueError as error:
                problems.append(f"--tasks: {error}")
        self.tasks = tasks
        for flag in ("tasks", "learning_rates", "batch_sizes", "seeds"):
            values = getattr(self, flag)
            if len(set(values)) != len(values):
                problems.append(f"--{flag} has duplicates: {values}.")
        if any(rate <= 0 for rate in self.learning_rates):
            problems.append(f"--learning_rates must be positive, got {self.learning_rates}.")
        if any(size < 1 for size in self.batch_sizes):
            problems.append(f"--batch_sizes must be at least 1, got {self.batch_sizes}.")
        if self.data_dir is not None and not Path(self.data_dir).is_dir():
            problems.append(f"--data_dir {self.data_dir} is not a folder.")
        if problems:
            raise ValueError("Invalid sweep arguments:\n- " + "\n- ".join(problems))


@dataclass(frozen=True)
class Run:
    """One finetuning of the grid: its coordinates, the sweep folder, and the flags it shares with the others."""

    task: str
    learning_rate: float
    batch_size: int
    seed: int
    sweep_dir: Path
    common_argv: tuple[str, ...]

    @property
    def name(self) -> str:
        """`<task>/lr<lr>_bs<bs>_seed<seed>`: its folder under `<sweep_dir>/runs/`."""
        return f"{self.task}/lr{self.learning_rate:g}_bs{self.batch_size}_seed{self.seed}"

    @property
    def output_dir(self) -> Path:
        """Where run_glue.py writes this run."""
        return self.sweep_dir / "runs" / self.name

    @property
    def finished(self) -> bool:
        """Whether run_glue.py completed it (wrote `all_results.json`)."""
        return (self.output_dir / RESULTS_FILE).is_file()

    @property
    def argv(self) -> list[str]:
        """The complete run_glue.py command line."""
        own = {
            "task_name": self.task,
            "learning_rate": self.learning_rate,
            "per_device_train_batch_size": self.batch_size,
            "seed": self.seed,
            "output_dir": str(self.output_dir),
        }
        return [*self.common_argv, *to_flag_tokens(own)]


def parse_flag_tokens(tokens: list[str]) -> dict[str, object]:
    """`--flag value`, `--flag=value`, `--flag v1 v2` and bare `--flag` (True) tokens to a mapping."""
    parsed: dict[str, object] = {}
    key = None
    for token in tokens:
        if token.startswith("--"):
            key, has_value, value = token[2:].partition("=")
            parsed[key] = value if has_value else True
        elif key is None:
            raise ValueError(f"Expected a --flag before {token!r} in the run_glue.py flags.")
        elif parsed[key] is True:
            parsed[key] = token
        else:
            previous = parsed[key]
            parsed[key] = [*previous, token] if isinstance(previous, list) else [previous, token]
    return parsed


def to_flag_tokens(flags: dict[str, object]) -> list[str]:
    """The inverse of `parse_flag_tokens`: True -> `--flag`, lists -> `--flag v1 v2`, None -> nothing (unset)."""
    tokens = []
    for key, value in flags.items():
        if value is None:
            continue
        tokens.append(f"--{key}")
        if isinstance(value, list):
            tokens.extend(str(item) for item in value)
        elif value is not True:
            tokens.append(str(value))
    return tokens


def parse_sweep_args(argv: list[str] | None = None) -> tuple[SweepArguments, dict[str, object]]:
    """Parse `[sweep.yaml] [sweep flags] [-- run_glue.py flags]` into the sweep and the per-run flags."""
    argv = sys.argv[1:] if argv is None else list(argv)
    sweep_tokens, run_tokens = (argv[: argv.index("--")], argv[argv.index("--") + 1 :]) if "--" in argv else (argv, [])
    file_config, file_run_args = {}, {}
    if sweep_tokens and sweep_tokens[0].endswith((".yaml", ".yml")):
        file_config = yaml.safe_load(Path(sweep_tokens.pop(0)).read_text()) or {}
        file_run_args = file_config.pop("run_glue_args", None) or {}
        known = {name for name in SweepArguments.__dataclass_fields__}
        unknown = sorted(set(file_config) - known)
        if unknown:
            raise ValueError(f"Unknown keys in the sweep file: {unknown}; use {sorted(known | {'run_glue_args'})}.")
    parser = HfArgumentParser(
        SweepArguments,
        usage="glue_sweep.py [sweep.yaml] [flags] [-- run_glue.py flags for every run]",
        description="Finetune a snapshot over a grid of GLUE tasks, learning rates, batch sizes and seeds.",
    )
    (args,) = parser.parse_args_into_dataclasses(
        args=to_flag_tokens(file_config) + sweep_tokens, look_for_args_file=False
    )
    command_run_args = resolve_key_aliases(parse_flag_tokens(run_tokens))
    run_args = {**RECIPE_ARGS, **resolve_key_aliases(file_run_args), **command_run_args}
    check_run_args(run_args, args)
    return args, run_args


def check_run_args(run_args: dict[str, object], args: SweepArguments) -> None:
    """`ValueError` if the per-run flags set what the sweep controls (the grid, the model, the data folder)."""
    problems = [f"--{key} is set by the sweep: use {flag}." for key, flag in SWEEP_CONTROLLED.items()
                if key in run_args]
    if args.data_dir is not None:
        files = [f"{split}_file" for split in DATA_FILE_FLAGS]
        problems += [f"--{file} comes from --data_dir." for file in files if file in run_args]
    if problems:
        raise ValueError("Invalid run_glue.py flags for a sweep:\n- " + "\n- ".join(problems))


def task_data_files(data_dir: Path, task: str) -> dict[str, str]:
    """The run_glue.py file flags for `<data_dir>/<task>/<split>.<ext>`; train and validation are required."""
    files = {}
    for split in DATA_FILE_FLAGS:
        found = [data_dir / task / f"{split}.{extension}" for extension in DATA_EXTENSIONS]
        found = [path for path in found if path.is_file()]
        if found:
            files[f"{split}_file"] = str(found[0])
    missing = [split for split in ("train", "validation") if f"{split}_file" not in files]
    if missing:
        raise ValueError(f"--data_dir: no {' or '.join(missing)} file (.csv, .json, .jsonl) in {data_dir / task}.")
    return files


def plan_runs(args: SweepArguments, run_args: dict[str, object]) -> list[Run]:
    """Every run of the grid, task by task, in a stable order."""
    runs = []
    for task in args.tasks:
        data_files = task_data_files(Path(args.data_dir), task) if args.data_dir else {}
        common = {
            **run_args,
            **data_files,
            "model_name_or_path": args.model_name_or_path,
            "do_train": True,
            "do_eval": True,
            "overwrite_output_dir": True,
        }
        runs += [
            Run(task, learning_rate, batch_size, seed, Path(args.output_dir), tuple(to_flag_tokens(common)))
            for learning_rate in args.learning_rates
            for batch_size in args.batch_sizes
            for seed in args.seeds
        ]
    return runs


class SubprocessRunner:
    """Runs run_glue.py as a child process (`launcher` + script + flags), its output into the run's log file."""

    def __init__(self, run_glue_script: Path, launcher: str | None = None):
        self.command = [*(shlex.split(launcher) if launcher else [sys.executable]), str(run_glue_script)]

    def __call__(self, argv: list[str], log_file: Path) -> None:
        """Run one finetuning; `RuntimeError` naming the log file if it fails."""
        with log_file.open("w") as log:
            returncode = subprocess.run([*self.command, *argv], stdout=log, stderr=subprocess.STDOUT).returncode
        if returncode != 0:
            raise RuntimeError(f"run_glue.py exited with code {returncode}; see {log_file}")


def run_sweep(runs: list[Run], runner: Runner, logs_dir: Path) -> list[Run]:
    """Run the unfinished runs one after another; return those that failed (the others go on regardless)."""
    logs_dir.mkdir(parents=True, exist_ok=True)
    failed = []
    for position, run in enumerate(runs, start=1):
        if run.finished:
            logger.info(f"[{position}/{len(runs)}] {run.name}: finished before, skipped")
            continue
        logger.info(f"[{position}/{len(runs)}] {run.name}: running")
        try:
            runner(run.argv, logs_dir / f"{run.name.replace('/', '_')}.log")
        except Exception as error:  # one failed run must not end the sweep
            logger.error(f"[{position}/{len(runs)}] {run.name} failed: {error}")
            failed.append(run)
    return failed


def main(argv: list[str] | None = None, *, run_glue_script: Path | None = None, runner: Runner | None = None) -> int:
    """The sweep command: run the grid, write the tables; exit status 1 if any run failed.

    Runs go through `runner` if given, else through a `SubprocessRunner` of `run_glue_script` (and `--launcher`).
    """
    if runner is None and run_glue_script is None:
        raise ValueError("Give the sweep a runner or the path of run_glue.py (glue_sweep.py passes it).")
    setup_logging()
    try:
        args, run_args = parse_sweep_args(argv)
        runs = plan_runs(args, run_args)
    except ValueError as error:
        raise usage_error(error) from None
    runner = runner or SubprocessRunner(run_glue_script, args.launcher)
    failed = run_sweep(runs, runner, Path(args.output_dir, "logs"))
    summary_file = write_tables(summarize(runs), Path(args.output_dir, "results"))
    logger.info(f"Results: {summary_file}")
    if failed:
        logger.error(f"{len(failed)} of {len(runs)} runs failed: {', '.join(run.name for run in failed)}")
    return 1 if failed else 0
