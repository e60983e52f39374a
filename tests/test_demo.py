"""The main job (`python -m budget_bert.demo`): its flags, its stages, and one real tiny run end to end."""

import json
import math

import pytest
from matplotlib.image import imread

from budget_bert.demo import pipeline
from budget_bert.demo.pipeline import (
    FILL_MASK_PROBES,
    TINY_PRESET,
    DemoArguments,
    finetuning_command,
    input_stamp,
    parse_demo_args,
    pretraining_command,
    read_stage,
    run_stage,
    stage_file,
)
from budget_bert.glue.glue_arguments import parse_args as parse_glue_args
from budget_bert.pretraining.pretraining_arguments import parse_pretraining_args
from budget_bert.pretraining.recipe import recipe_value
from budget_bert.report.run_report import PLOTS
from pretraining_fixtures import prepared_data  # noqa: F401 - fixture


# --- flags ---


def test_tiny_preset_sets_defaults_and_explicit_flags_win():
    args = parse_demo_args(["--tiny", "--budget_minutes", "0.5"])
    assert args.budget_minutes == 0.5
    assert args.hidden_size == TINY_PRESET["hidden_size"]
    assert args.stdlib_modules == TINY_PRESET["stdlib_modules"]
    assert parse_demo_args([]).hidden_size == DemoArguments.hidden_size


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--budget_minutes", "0"], "--budget_minutes must be > 0"),
        (["--hidden_size", "100", "--num_attention_heads", "3"], "--hidden_size 100 is not a multiple"),
        (["--max_finetune_steps", "0"], "--max_finetune_steps must be >= 1"),
    ],
)
def test_bad_flags_are_refused_with_the_flag(argv, message, capsys):
    with pytest.raises(SystemExit):
        parse_demo_args(argv)
    assert message in capsys.readouterr().err


def test_pretraining_command_is_run_mlm_flags_with_the_demo_budget(prepared_data, tmp_path):
    args = DemoArguments(budget_minutes=3.0, hidden_size=128, num_layers=3, num_attention_heads=2)
    parsed = parse_pretraining_args(pretraining_command(args, prepared_data.dataset, tmp_path / "out"))
    model_args, data_args, budget_args, training_args = parsed.model, parsed.data, parsed.budget, parsed.training
    assert budget_args.budget_seconds == pytest.approx(180.0)
    assert budget_args.lr_schedule == "time" and budget_args.markers == [0.5, 0.9]
    assert budget_args.do_validation and training_args.do_eval
    assert (model_args.hidden_size, model_args.num_hidden_layers) == (128, 3)
    # Nothing of the recipe is given: run_mlm.py's defaults apply.
    assert model_args.intermediate_size is None and parsed.model_config.intermediate_size == 344
    assert training_args.learning_rate == recipe_value("learning_rate")
    assert "--lr" in pretraining_command(DemoArguments(learning_rate=5e-4), prepared_data.dataset, tmp_path / "o")
    assert data_args.dataset_path == str(prepared_data.dataset)


def test_finetuning_command_is_run_glue_flags(tmp_path):
    args = DemoArguments(max_finetune_steps=7, max_finetune_eval_samples=50)
    model_args, data_args, _, training_args = parse_glue_args(
        finetuning_command(args, tmp_path / "snapshot", tmp_path / "reviews", tmp_path / "out")
    )
    assert model_args.model_name_or_path == str(tmp_path / "snapshot")
    assert data_args.task_name == "sst2" and data_args.max_eval_samples == 50 and data_args.max_train_samples is None
    assert data_args.max_seq_length == args.max_seq_length
    assert training_args.max_steps == 7 and training_args.do_train and training_args.do_eval


# --- stages ---


def test_stage_builds_once_and_skips_when_options_match(tmp_path):
    builds = []

    def build(folder):
        builds.append(folder)
        folder.mkdir()
        (folder / "out.txt").write_text("x")

    assert run_stage("s", tmp_path / "s", {"a": 1}, build)
    assert not run_stage("s", tmp_path / "s", {"a": 1}, build)
    assert len(builds) == 1
    assert read_stage(tmp_path / "s") == {"options": {"a": 1}, "complete": True}

    assert run_stage("s", tmp_path / "s", {"a": 2}, build)  # other options: built again, from an empty folder
    assert len(builds) == 2 and input_stamp(tmp_path / "s") == {"a": 2}


def test_interrupted_stage_is_built_again(tmp_path):
    def failing(folder):
        folder.mkdir()
        (folder / "half.txt").write_text("x")
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        run_stage("s", tmp_path / "s", {"a": 1}, failing)
    assert read_stage(tmp_path / "s")["complete"] is False

    assert run_stage("s", tmp_path / "s", {"a": 1}, lambda folder: folder.mkdir())
    assert not (tmp_path / "s" / "half.txt").exists()


def test_folder_not_made_by_the_demo_is_never_deleted(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "mine.txt").write_text("precious")
    with pytest.raises(ValueError, match="was not made by the demo"):
        run_stage("data", tmp_path / "data", {}, lambda folder: None)
    assert (tmp_path / "data" / "mine.txt").read_text() == "precious"
    assert not stage_file(tmp_path / "data").exists()


# --- one real run of every stage, tiny ---


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("demo")
    with pytest.MonkeyPatch.context() as patch:
        # One thread per script: the tiny model gains nothing from two, and a busy machine slows two down a lot.
        patch.setenv("OMP_NUM_THREADS", "1")
        summary = pipeline.main(["--tiny", "--output_dir", str(output_dir)])
    return output_dir, summary


def test_demo_pretrains_inside_the_budget_with_validation_and_markers(demo_run):
    output_dir, summary = demo_run
    run = summary.pretraining
    assert summary.corpus_file.stat().st_size > 10_000
    assert summary.data.vocab_size == TINY_PRESET["vocab_size"]
    assert run.budget_seconds == pytest.approx(TINY_PRESET["budget_minutes"] * 60)
    assert run.elapsed_seconds >= run.budget_seconds  # stopped by the budget, at the first step past it
    assert run.global_step >= 2 and run.tokens_seen > 0
    assert [path.name for path in summary.snapshots] == ["marker-0.50", "marker-0.90", "end"]
    for snapshot in summary.snapshots:
        assert (snapshot / "model.safetensors").is_file() and (snapshot / "snapshot_info.json").is_file()
    assert len(run.entries("eval_loss")) >= 2
    assert 0 < run.final_eval_loss < 12 and run.final_perplexity == pytest.approx(math.exp(run.final_eval_loss))
    rates = [entry["learning_rate"] for entry in run.entries("learning_rate")]
    assert max(rates) <= recipe_value("learning_rate") and rates[-1] < max(rates)  # the time-based decay


def test_demo_finetunes_the_end_snapshot_and_scores_it(demo_run):
    output_dir, summary = demo_run
    results = json.loads((output_dir / "finetuning" / "all_results.json").read_text())
    assert 0.0 <= results["eval_accuracy"] <= 1.0
    assert results["eval_samples"] == TINY_PRESET["max_finetune_eval_samples"]
    assert results["train_samples"] == TINY_PRESET["max_finetune_train_samples"]
    state = json.loads((output_dir / "finetuning" / "trainer_state.json").read_text())
    assert state["global_step"] == TINY_PRESET["max_finetune_steps"]
    config = json.loads((output_dir / "finetuning" / "config.json").read_text())
    assert config["model_type"] == "budget-bert"
    assert summary.accuracy == results["eval_accuracy"]


def test_demo_writes_the_run_report(demo_run):
    output_dir, summary = demo_run
    assert summary.report_file == output_dir / "pretraining" / "report" / "report.md"
    for name in PLOTS:
        assert imread(summary.report_file.parent / name).shape[0] > 100
    text = summary.report_file.read_text()
    assert f"| optimizer steps | {summary.pretraining.global_step:,} |" in text
    assert "`finetune_snapshots/marker-0.90`" in text


def test_summary_names_every_output_and_the_scores(demo_run):
    output_dir, summary = demo_run
    text = summary.render()
    for path in (summary.corpus_file, summary.tokenizer_dir, summary.data_dir, summary.pretraining_dir,
                 summary.finetuning_dir, summary.report_file, *summary.snapshots):
        assert path.exists() and str(path) in text
    assert f"final eval MLM loss   {summary.pretraining.final_eval_loss:.4f}" in text
    assert f"movie-review accuracy {summary.accuracy:.4f}" in text
    assert len(summary.fill_mask) == len(FILL_MASK_PROBES)
    for sentence, guesses in summary.fill_mask:
        assert "[MASK]" in sentence and len(guesses) == 3 and f"{sentence}  ->  {', '.join(guesses)}" in text


def test_second_run_skips_every_finished_stage(demo_run, monkeypatch):
    output_dir, summary = demo_run
    stamps = {path: path.stat().st_mtime_ns for path in output_dir.rglob(".*.stage.json")}
    assert len(stamps) == 7

    def no_script(script, args):
        raise AssertionError(f"{script} ran again")

    monkeypatch.setattr(pipeline, "run_script", no_script)
    again = pipeline.main(["--tiny", "--output_dir", str(output_dir)])
    assert {path: path.stat().st_mtime_ns for path in stamps} == stamps
    assert again.accuracy == summary.accuracy
    assert again.pretraining.final_eval_loss == summary.pretraining.final_eval_loss
