"""The GLUE sweep without training: command lines, YAML, planning, subprocess runs, resuming, tables.

The subprocess runs use a stand-in for run_glue.py that writes a made-up `all_results.json` (or fails), so the
tables can be checked against hand-computed medians. The sweep over real finetunings is in test_glue_run.py.
"""

import csv
import json
import math
import textwrap
from pathlib import Path

import pytest

from budget_bert.glue.results import summarize, write_tables
from budget_bert.glue.sweep import (
    RECIPE_ARGS,
    SweepArguments,
    main,
    parse_flag_tokens,
    parse_sweep_args,
    plan_runs,
    to_flag_tokens,
)

# Stands in for run_glue.py: the score is a function of learning rate and seed; seed 13 crashes.
FAKE_RUN_GLUE = textwrap.dedent(
    """
    import json, pathlib, sys
    def value(flag):
        return sys.argv[sys.argv.index(flag) + 1]
    seed, learning_rate = int(value("--seed")), float(value("--learning_rate"))
    print("fake run_glue", " ".join(sys.argv[1:]))
    if seed == 13:
        sys.exit("out of memory")
    score = {1e-5: 0.5, 2e-5: 0.6}[learning_rate] + {1: 0.00, 2: 0.10, 3: 0.02}[seed]
    metrics = {"eval_f1": score, "eval_accuracy": score - 0.1, "eval_combined_score": score - 0.05,
               "eval_accuracy_mm": score - 0.2, "eval_matthews_correlation": score, "eval_spearmanr": score,
               "eval_pearson": score}
    output_dir = pathlib.Path(value("--output_dir"))
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "all_results.json").write_text(json.dumps(metrics))
    """
)


def read_csv(path: Path) -> list[dict]:
    """Rows of a csv file as dicts."""
    with path.open() as file:
        return list(csv.DictReader(file))


def sweep_argv(tmp_path: Path, *extra: str) -> list[str]:
    """A sweep command line over the stand-in script's grid."""
    return ["--model_name_or_path", "snap", "--output_dir", str(tmp_path / "sweep"), "--tasks", "mrpc", "COLA",
            "--learning_rates", "1e-5", "2e-5", "--batch_sizes", "16", "--seeds", "1", "2", "3", *extra]


def test_flag_tokens_round_trip():
    tokens = ["--fp16", "--num_train_epochs", "3", "--label_names", "a", "b", "--warmup_steps=7"]
    flags = parse_flag_tokens(tokens)
    assert flags == {"fp16": True, "num_train_epochs": "3", "label_names": ["a", "b"], "warmup_steps": "7"}
    assert parse_flag_tokens(to_flag_tokens(flags)) == flags
    with pytest.raises(ValueError, match="Expected a --flag before '3'"):
        parse_flag_tokens(["3"])


def test_yaml_and_command_line_merge_with_later_values_winning(tmp_path):
    config = tmp_path / "sweep.yaml"
    config.write_text(textwrap.dedent(
        """
        model_name_or_path: snap
        output_dir: out
        tasks: [rte, MRPC]
        learning_rates: [1.0e-4, 5.0e-5]
        seeds: [1, 2]
        run_glue_args:
          evaluation_strategy: epoch
          num_train_epochs: 3
          fp16: true
        """
    ))
    args, run_args = parse_sweep_args([str(config), "--seeds", "7", "--", "--num_train_epochs", "10"])
    assert args.tasks == ["rte", "mrpc"] and args.learning_rates == [1e-4, 5e-5] and args.seeds == [7]
    assert args.batch_sizes == [32]  # the default
    assert run_args["eval_strategy"] == "epoch" and run_args["num_train_epochs"] == "10" and run_args["fp16"] is True
    assert run_args["lr_scheduler_type"] == RECIPE_ARGS["lr_scheduler_type"]


def test_invalid_sweeps_are_refused_before_running(tmp_path):
    config = tmp_path / "sweep.yaml"
    config.write_text("model_name_or_path: snap\noutput_dir: out\nlearning_rate: [1.0e-4]\n")
    with pytest.raises(ValueError, match=r"Unknown keys in the sweep file: \['learning_rate'\]"):
        parse_sweep_args([str(config)])
    with pytest.raises(ValueError, match=r"--learning_rate is set by the sweep: use --learning_rates"):
        parse_sweep_args(["--model_name_or_path", "m", "--output_dir", "o", "--", "--learning_rate", "1e-4"])
    with pytest.raises(ValueError) as error:
        SweepArguments(model_name_or_path="m", output_dir="o", tasks=["mrpc", "qqq"], seeds=[1, 1])
    assert "Unknown GLUE task 'qqq'" in str(error.value) and "--seeds has duplicates" in str(error.value)
    (tmp_path / "glue" / "rte").mkdir(parents=True)
    (tmp_path / "glue" / "rte" / "train.csv").write_text("sentence1,sentence2,label\n")
    args, run_args = parse_sweep_args(["--model_name_or_path", "m", "--output_dir", "o", "--tasks", "rte",
                                       "--data_dir", str(tmp_path / "glue")])
    with pytest.raises(ValueError, match=r"--data_dir: no validation file"):
        plan_runs(args, run_args)


def test_plan_names_each_run_and_builds_its_command(tmp_path):
    args, run_args = parse_sweep_args(sweep_argv(tmp_path, "--", "--max_steps", "5"))
    runs = plan_runs(args, run_args)
    assert len(runs) == 2 * 2 * 1 * 3
    assert runs[0].name == "mrpc/lr1e-05_bs16_seed1" and runs[-1].name == "cola/lr2e-05_bs16_seed3"
    flags = parse_flag_tokens(runs[0].argv)
    assert flags["output_dir"] == str(tmp_path / "sweep" / "runs" / "mrpc" / "lr1e-05_bs16_seed1")
    assert (flags["task_name"], flags["learning_rate"], flags["per_device_train_batch_size"], flags["seed"]) == (
        "mrpc", "1e-05", "16", "1"
    )
    assert flags["max_steps"] == "5" and flags["do_train"] is True and flags["overwrite_output_dir"] is True


def test_subprocess_sweep_writes_tables_and_resumes(tmp_path):
    script = tmp_path / "fake_run_glue.py"
    script.write_text(FAKE_RUN_GLUE)
    assert main(sweep_argv(tmp_path), run_glue_script=script) == 0
    results = tmp_path / "sweep" / "results"
    # mrpc, lr 2e-5: scores 0.60, 0.70, 0.62 -> median 62, best 70; lr 1e-5: 50, 60, 52 -> median 52.
    rows = {row["learning_rate"]: row for row in read_csv(results / "mrpc.csv")}
    assert float(rows["2e-05"]["f1 median"]) == pytest.approx(62)
    assert float(rows["2e-05"]["f1 best"]) == pytest.approx(70)
    assert float(rows["1e-05"]["f1 median"]) == pytest.approx(52)
    assert float(rows["2e-05"]["accuracy median"]) == pytest.approx(52)
    assert rows["2e-05"]["finished"] == "3/3"
    assert "Task score (median of the best configuration): 62.00; best single run: 70.00" in (
        results / "mrpc.md").read_text()
    summary = {row["task"]: row for row in read_csv(results / "summary.csv")}
    assert float(summary["cola"]["score (median, best config)"]) == pytest.approx(62)
    assert float(summary["GLUE average (2 of 8 tasks)"]["score (median, best config)"]) == pytest.approx(62)
    log = (tmp_path / "sweep" / "logs" / "mrpc_lr1e-05_bs16_seed1.log").read_text()
    assert log.startswith("fake run_glue") and "--task_name mrpc" in log

    (tmp_path / "sweep" / "runs" / "mrpc" / "lr1e-05_bs16_seed1" / "all_results.json").unlink()
    script.write_text(FAKE_RUN_GLUE.replace('print("fake run_glue"', 'print("rerun"'))
    assert main(sweep_argv(tmp_path), run_glue_script=script) == 0
    reruns = [path.name for path in (tmp_path / "sweep" / "logs").iterdir() if path.read_text().startswith("rerun")]
    assert reruns == ["mrpc_lr1e-05_bs16_seed1.log"]


def test_a_failed_run_does_not_stop_the_sweep(tmp_path):
    script = tmp_path / "fake_run_glue.py"
    script.write_text(FAKE_RUN_GLUE)
    assert main(sweep_argv(tmp_path, "--seeds", "13", "2"), run_glue_script=script) == 1
    assert "out of memory" in (tmp_path / "sweep" / "logs" / "mrpc_lr1e-05_bs16_seed13.log").read_text()
    rows = {row["learning_rate"]: row for row in read_csv(tmp_path / "sweep" / "results" / "mrpc.csv")}
    assert rows["2e-05"]["finished"] == "1/2" and float(rows["2e-05"]["f1 median"]) == pytest.approx(70)


def test_tables_leave_out_nan_scores_and_unfinished_tasks(tmp_path):
    args, run_args = parse_sweep_args(["--model_name_or_path", "m", "--output_dir", str(tmp_path), "--tasks", "stsb",
                                       "wnli", "rte", "--seeds", "1", "2", "3"])
    runs = plan_runs(args, run_args)
    for run, score in zip(runs, (0.9, math.nan, 0.7, 0.4, 0.3, 0.2)):  # stsb seeds 1-3, wnli seeds 1-3
        run.output_dir.mkdir(parents=True)
        metrics = {"eval_spearmanr": score, "eval_pearson": score} if run.task == "stsb" else {"eval_accuracy": score}
        (run.output_dir / "all_results.json").write_text(json.dumps(metrics))
    summaries = summarize(runs)
    assert summaries["stsb"].score == pytest.approx(80)  # median of 90 and 70; the NaN run is left out
    assert summaries["stsb"].configs[0].runs == 3 and len(summaries["stsb"].configs[0].scores) == 2
    assert summaries["wnli"].score == pytest.approx(30)
    assert math.isnan(summaries["rte"].score)
    write_tables(summaries, tmp_path / "results")
    summary = {row["task"]: row for row in read_csv(tmp_path / "results" / "summary.csv")}
    # WNLI is not part of the GLUE average and RTE has no finished run: the average covers STS-B alone.
    assert float(summary["GLUE average (1 of 8 tasks)"]["score (median, best config)"]) == pytest.approx(80)
    assert "No finished run yet." in (tmp_path / "results" / "rte.md").read_text()
