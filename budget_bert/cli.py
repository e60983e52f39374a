"""What every entry script shares: logging, JSON argument files, and one-line errors for expected failures.

    def main(argv: list[str] | None = None) -> int:
        args = parse(json_file_argv(argv))       # `script.py args.json` works as in HuggingFace's scripts
        setup_logging(args.training.get_process_log_level())
        ...                                      # raise UsageError(...) for anything the user can fix

    if __name__ == "__main__":
        run_cli("run_mlm.py", main)

Used by `run_mlm.py`, `run_glue.py`, `prepare_data.py`, `glue_sweep.py`, `python -m budget_bert.report` and
`python -m budget_bert.hub.push`; `parse_config_overrides` reads the `--config_overrides` of `run_mlm.py` and
`run_glue.py`. An expected error ends the script with one line per problem,
`<script>: error: <problem>`: a `UsageError` (a bad flag, a missing file, data that does not fit) with exit code 2,
the code argparse uses for usage errors, an `ExpectedError` (a run that failed for a reason outside the program,
such as a full disk) with 1. Anything else is a bug and keeps its traceback. `--log_level debug` (or `--debug`, for the
scripts that have no `--log_level`) shows the traceback of an expected error too.
"""

from __future__ import annotations

import copy
import json
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import transformers
from huggingface_hub.errors import StrictDataclassError
from transformers import PretrainedConfig


EXIT_USAGE = 2
"""The exit code of a usage error, as argparse uses it."""
PROJECT_LOGGERS = ("budget_bert", "trainer_callbacks")
"""The project's logger hierarchies: outside `transformers`, so its verbosity does not reach them by itself."""
LOG_FORMAT = "%(asctime)s - %(levelname)s - %(name)s - %(message)s"

_T = TypeVar("_T")


class ExpectedError(Exception):
    """
    A failure that is no bug, each problem naming what failed and the fix: `run_cli` reports it as one line per
    problem and exits with `exit_code` (1: the run failed, e.g. a full disk; see `UsageError` for 2).

    Args:
        problems (`str` or `Sequence[str]`): The problem, or every problem found (all are reported at once).
    """

    exit_code = 1

    def __init__(self, problems: str | Sequence[str]):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("; ".join(self.problems))


class UsageError(ExpectedError, ValueError):
    """An error of the command line or its inputs (a flag, a file, data that does not fit): exit code 2."""

    exit_code = EXIT_USAGE


class CheckedArguments:
    """
    Base of the argument dataclasses that check themselves, as HfArgumentParser expects: `problems()` lists every
    problem (each naming its flag and the fix), and `__post_init__` raises them all at once in one `ValueError`.
    """

    def __post_init__(self):
        problems = self.problems()
        if problems:
            raise ValueError("; ".join(problems))

    def problems(self) -> list[str]:
        """Every problem of these arguments (empty when they are valid)."""
        return []


def usage_error(error: ValueError) -> UsageError:
    """
    The `UsageError` of a `ValueError` raised by argument checks: one problem per `- ` line of its message (the
    checks that list every problem, under a heading), else its message.
    """
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return UsageError([line[2:] for line in lines if line.startswith("- ")] or lines or [type(error).__name__])


def raise_problems(problems: Sequence[str]) -> None:
    """Raise one `UsageError` listing `problems`, if there are any."""
    if problems:
        raise UsageError(problems)


def setup_logging(level: int = logging.INFO) -> None:
    """
    Log to stdout at `level`, in the format of HuggingFace's example scripts: transformers, datasets and the
    project's own loggers. Trainer scripts pass `training_args.get_process_log_level()` (`--log_level` on the main
    process, `--log_level_replica` on the others).
    """
    logging.basicConfig(format=LOG_FORMAT, datefmt="%m/%d/%Y %H:%M:%S", handlers=[logging.StreamHandler(sys.stdout)])
    # datasets' library logger is a plain logging hierarchy; setting it here spares the scripts that never load
    # datasets its import.
    for name in (*PROJECT_LOGGERS, "datasets"):
        logging.getLogger(name).setLevel(level)
    transformers.utils.logging.set_verbosity(level)
    transformers.utils.logging.enable_default_handler()
    transformers.utils.logging.enable_explicit_format()


def given_flags(argv: Sequence[str]) -> set[str]:
    """Names of the flags that appear on the command line, with underscores (to tell an explicit value from a
    default)."""
    return {token[2:].split("=", 1)[0].replace("-", "_") for token in argv if token.startswith("--")}


def json_file_argv(argv: Sequence[str] | None = None) -> list[str]:
    """
    The command line, with a single `.json` argument (`script.py args.json`, as HuggingFace's scripts accept)
    turned into the flags it holds: `{"output_dir": "out", "do_train": true, "tasks": ["mrpc", "rte"]}` reads as
    `--output_dir out --do_train true --tasks mrpc rte`. Everything else then works as on the command line (aliases,
    checks of what was given).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) != 1 or not argv[0].endswith(".json"):
        return argv
    path = Path(argv[0])
    try:
        values = json.loads(path.read_text())
    except OSError as error:
        raise UsageError(f"{path}: cannot be read ({error.strerror or error})") from None
    except ValueError as error:
        raise UsageError(f"{path} is not valid JSON ({error}): fix the file") from None
    if not isinstance(values, dict):
        raise UsageError(f"{path} must hold one JSON object of flag names and values")
    return [token for key, value in values.items() for token in _flag_tokens(key, value)]


def _flag_tokens(key: str, value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, list):
        return [f"--{key}", *map(str, value)]
    if isinstance(value, dict):
        return [f"--{key}", json.dumps(value)]
    return [f"--{key}", str(value)]


def _is_bare_debug(argv: Sequence[str], position: int) -> bool:
    # `--debug underflow_overflow` is TrainingArguments' own --debug, which takes a value.
    following = argv[position + 1] if position + 1 < len(argv) else None
    return argv[position] == "--debug" and (following is None or following.startswith("-"))


def wants_traceback(argv: Sequence[str]) -> bool:
    """Whether the command line asks for the traceback of expected errors: `--log_level debug` or `--debug`."""
    argv = list(argv)
    for position, token in enumerate(argv):
        if _is_bare_debug(argv, position) or token in ("--log_level=debug", "--log-level=debug"):
            return True
        if token in ("--log_level", "--log-level") and argv[position + 1 : position + 2] == ["debug"]:
            return True
    return False


def run_cli(prog: str, main: Callable[[list[str]], _T], argv: Sequence[str] | None = None) -> _T:
    """
    Run `main(argv)` (default: the command line, less a bare `--debug`) and return what it returns; an
    `ExpectedError` ends the process with one line per problem on stderr, `<prog>: error: <problem>`, and its exit
    code, unless `wants_traceback(argv)`.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = wants_traceback(argv)
    try:
        return main([token for position, token in enumerate(argv) if not _is_bare_debug(argv, position)])
    except ExpectedError as error:
        if debug:
            raise
        for problem in error.problems:
            print(f"{prog}: error: {problem}", file=sys.stderr, flush=True)
        raise SystemExit(error.exit_code) from None


def parse_config_overrides(overrides: str, template: PretrainedConfig) -> dict[str, Any]:
    """
    `--config_overrides "k=v,k=v"` as typed values, read as HuggingFace's run_mlm.py reads them
    (`PretrainedConfig.update_from_string`: each key must be a field of `template`, the value takes its type).
    """
    probe = copy.deepcopy(template)
    try:
        probe.update_from_string(overrides)
        keys = [item.split("=", 1)[0] for item in overrides.split(",")]
    except (ValueError, StrictDataclassError) as error:
        raise UsageError(
            f"--config_overrides {overrides}: {error} (give k=v pairs separated by commas, keys of the "
            f"{type(template).__name__})"
        ) from None
    return {key: getattr(probe, key) for key in keys}
