"""The CLI module every entry script shares: JSON argument files, one-line errors with exit code 2, --debug."""

import json
import subprocess
import sys

import pytest

from budget_bert.cli import ExpectedError, UsageError, json_file_argv, run_cli, usage_error, wants_traceback
from budget_bert.glue.glue_arguments import parse_args as parse_glue_args
from pretraining_fixtures import REPO


def test_a_json_file_is_read_as_the_flags_it_holds(tmp_path):
    path = tmp_path / "args.json"
    path.write_text(json.dumps({"output_dir": "out", "do_train": True, "tasks": ["mrpc", "rte"], "seed": 3,
                                "unset": None, "deepspeed": {"zero_optimization": {"stage": 1}}}))
    assert json_file_argv([str(path)]) == [
        "--output_dir", "out", "--do_train", "True", "--tasks", "mrpc", "rte", "--seed", "3",
        "--deepspeed", '{"zero_optimization": {"stage": 1}}',
    ]
    assert json_file_argv(["--seed", "3"]) == ["--seed", "3"]


@pytest.mark.parametrize(("content", "message"), [("{not json", "is not valid JSON"), ("[1, 2]", "one JSON object")])
def test_a_bad_json_file_is_a_usage_error(tmp_path, content, message):
    path = tmp_path / "args.json"
    path.write_text(content)
    with pytest.raises(UsageError, match=message):
        json_file_argv([str(path)])


def test_usage_errors_are_one_line_each_with_exit_code_2(capsys):
    def main(argv):
        raise UsageError(["--a is wrong: fix it", "--b is wrong too"])

    with pytest.raises(SystemExit) as raised:
        run_cli("script.py", main, ["--a", "1"])
    assert raised.value.code == 2
    assert capsys.readouterr().err.splitlines() == ["script.py: error: --a is wrong: fix it",
                                                    "script.py: error: --b is wrong too"]


def test_an_expected_failure_of_the_run_exits_1_and_a_bug_keeps_its_traceback(capsys):
    def disk_full(argv):
        raise ExpectedError("saving failed: free disk space")

    with pytest.raises(SystemExit) as raised:
        run_cli("script.py", disk_full, [])
    assert raised.value.code == 1 and capsys.readouterr().err == "script.py: error: saving failed: free disk space\n"

    def bug(argv):
        raise KeyError("bug")

    with pytest.raises(KeyError):
        run_cli("script.py", bug, [])


@pytest.mark.parametrize(
    ("argv", "wanted"),
    [(["--log_level", "debug"], True), (["--log_level=debug"], True), (["--debug"], True),
     (["--debug", "underflow_overflow"], False), (["--log_level", "info"], False)],
)
def test_log_level_debug_or_debug_asks_for_the_traceback(argv, wanted):
    assert wants_traceback(argv) is wanted


def test_debug_shows_the_traceback_and_a_bare_debug_is_not_passed_on():
    seen = []

    def main(argv):
        seen.append(argv)
        raise UsageError("--a is wrong")

    with pytest.raises(UsageError):
        run_cli("script.py", main, ["--a", "1", "--debug"])
    assert seen == [["--a", "1"]]


def test_a_heading_and_bullets_become_one_problem_each():
    error = usage_error(ValueError("Invalid arguments:\n- --a is wrong.\n- --b is wrong."))
    assert error.problems == ["--a is wrong.", "--b is wrong."]
    assert usage_error(ValueError("--c is wrong")).problems == ["--c is wrong"]


def test_an_unknown_glue_task_is_one_line_naming_the_flag():
    with pytest.raises(UsageError) as raised:
        parse_glue_args(["--model_name_or_path", "m", "--task_name", "nope", "--output_dir", "o", "--do_train"])
    (problem,) = raised.value.problems
    assert problem.startswith("--task_name: ") and "nope" in problem


@pytest.mark.parametrize(
    ("script", "argv", "message"),
    [
        ("run_glue.py", ["--model_name_or_path", "m", "--task_name", "nope", "--output_dir", "o", "--do_train"],
         "run_glue.py: error: --task_name: "),
        ("prepare_data.py", ["--train_file", "/nowhere.txt", "--tokenizer_name", "t", "--output_dir", "o"],
         "prepare_data.py: error: --train_file /nowhere.txt: no such file"),
        ("glue_sweep.py", ["--model_name_or_path", "m", "--output_dir", "o", "--tasks", "nope"],
         "glue_sweep.py: error: --tasks: "),
    ],
)
def test_each_script_reports_a_usage_error_in_one_line(script, argv, message, tmp_path):
    result = subprocess.run([sys.executable, script, *argv], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(message), result.stderr[-2000:]
