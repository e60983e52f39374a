"""End-to-end tests of run_glue.py and the GLUE sweep on a tiny pretraining snapshot and tiny local files.

The snapshots are 2-layer, 32-wide masked LMs (stock BERT and BudgetBert) saved with a WordPiece tokenizer
trained here; the data sets are a few dozen made-up examples per split. Nothing is downloaded.
"""

import csv
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    BertConfig,
    BertForMaskedLM,
    BertTokenizerFast,
)

from budget_bert import BudgetBertConfig, BudgetBertForMaskedLM
from budget_bert.glue import sweep

REPO = Path(__file__).resolve().parents[1]
RUN_GLUE = REPO / "run_glue.py"

WORDS = "the a movie film plot actor story good great fine bad awful dull was is very not".split()
MAX_LENGTH = 32


def load_run_glue():
    """Import run_glue.py (a script at the repo root, not a package module) to call its `main` in-process."""
    spec = importlib.util.spec_from_file_location("run_glue", RUN_GLUE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


run_glue = load_run_glue()


def build_tokenizer() -> BertTokenizerFast:
    """A WordPiece tokenizer trained on the test vocabulary, wrapped as a fast BERT tokenizer."""
    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    trainer = trainers.WordPieceTrainer(vocab_size=100, special_tokens=specials)
    tokenizer.train_from_iterator([" ".join(WORDS)] * 4, trainer)
    cls, sep = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)]
    )
    tokenizer.decoder = decoders.WordPiece()
    return BertTokenizerFast(
        tokenizer_object=tokenizer, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]",
        mask_token="[MASK]", model_max_length=MAX_LENGTH,
    )


def save_snapshot(path: Path, config_class, model_class) -> Path:
    """Save a tiny (2 layers, width 32) masked-LM pretraining snapshot with its tokenizer, as run_mlm.py does."""
    tokenizer = build_tokenizer()
    config = config_class(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=37, max_position_embeddings=MAX_LENGTH,
    )
    model_class(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def snapshot(tmp_path_factory) -> Path:
    """A stock BERT masked-LM snapshot."""
    return save_snapshot(tmp_path_factory.mktemp("snapshot"), BertConfig, BertForMaskedLM)


@pytest.fixture(scope="session")
def budget_snapshot(tmp_path_factory) -> Path:
    """A BudgetBert masked-LM snapshot: weights, config with `auto_map`, and the model code next to them."""
    return save_snapshot(tmp_path_factory.mktemp("budget_snapshot"), BudgetBertConfig, BudgetBertForMaskedLM)


def sentence(index: int, length: int = 5) -> str:
    """A deterministic made-up sentence."""
    return " ".join(WORDS[(index * 7 + offset * 3) % len(WORDS)] for offset in range(length))


def write_rows(path: Path, rows: list[dict]) -> Path:
    """Write `rows` as csv or json lines, by the file's extension."""
    if path.suffix == ".csv":
        with path.open("w", newline="") as file:
            writer = csv.DictWriter(file, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    else:
        path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def make_split(columns: tuple[str, ...], label, count: int, offset: int = 0) -> list[dict]:
    """`count` rows with the text `columns` and `label(i)` as label."""
    return [
        {**{column: sentence(offset + i + 5 * position) for position, column in enumerate(columns)}, "label": label(i)}
        for i in range(count)
    ]


def write_task_files(folder: Path, columns: tuple[str, ...], label, extension: str = "csv", splits=None) -> dict:
    """Write train/validation (and any extra) split files; return the run_glue flags that point at them."""
    folder.mkdir(parents=True, exist_ok=True)
    splits = splits or {"train": 24, "validation": 12}
    return {
        f"--{split}_file": str(write_rows(folder / f"{split}.{extension}", make_split(columns, label, count, offset)))
        for offset, (split, count) in enumerate(splits.items())
    }


def argv(snapshot: Path, output_dir: Path, files: dict, *extra: str, task: str | None = None) -> list[str]:
    """A short run_glue command line: 4 training steps, evaluation at the end."""
    args = [
        "--model_name_or_path", str(snapshot), "--output_dir", str(output_dir), "--do_train", "--do_eval",
        "--max_steps", "4", "--per_device_train_batch_size", "8", "--per_device_eval_batch_size", "8",
        "--learning_rate", "1e-3", "--use_cpu", "--report_to", "none", "--save_strategy", "no",
        "--disable_tqdm", "true", "--max_seq_length", "16", "--cache_dir", str(output_dir.parent / "cache"),
    ]
    if task:
        args += ["--task_name", task]
    for flag, value in files.items():
        args += [flag, value]
    return args + list(extra)


def read_results(output_dir: Path) -> dict:
    """The `all_results.json` of a finished run."""
    return json.loads((output_dir / "all_results.json").read_text())


def binary(i: int) -> int:
    """Alternating 0/1 labels."""
    return i % 2


def test_single_sentence_classification(snapshot, tmp_path):
    files = write_task_files(tmp_path / "data", ("sentence",), binary)
    results = run_glue.main(argv(snapshot, tmp_path / "out", files, task="SST2"))
    saved = read_results(tmp_path / "out")
    assert saved == pytest.approx(results)
    assert 0.0 <= saved["eval_accuracy"] <= 1.0
    assert saved["eval_samples"] == 12 and saved["train_samples"] == 24
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["id2label"] == {"0": "negative", "1": "positive"}
    assert config["architectures"] == ["BertForSequenceClassification"]


def test_pair_classification_from_json_lines(snapshot, tmp_path):
    files = write_task_files(tmp_path / "data", ("sentence1", "sentence2"), binary, extension="jsonl")
    saved = run_glue.main(argv(snapshot, tmp_path / "out", files, task="mrpc"))
    assert {"eval_accuracy", "eval_f1", "eval_combined_score"} <= set(saved)
    assert saved["eval_combined_score"] == pytest.approx((saved["eval_accuracy"] + saved["eval_f1"]) / 2)


def test_regression(snapshot, tmp_path):
    files = write_task_files(tmp_path / "data", ("sentence1", "sentence2"), lambda i: i % 6 * 1.0)
    saved = run_glue.main(argv(snapshot, tmp_path / "out", files, task="stsb"))
    assert {"eval_pearson", "eval_spearmanr", "eval_combined_score"} <= set(saved)
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["problem_type"] == "regression" and len(config["id2label"]) == 1


def test_predictions_for_a_test_file_without_labels(snapshot, tmp_path):
    files = write_task_files(tmp_path / "data", ("sentence",), binary, splits={"train": 16, "validation": 8})
    test_rows = [{"sentence": sentence(i)} for i in range(5)]
    files["--test_file"] = str(write_rows(tmp_path / "data" / "test.csv", test_rows))
    run_glue.main(argv(snapshot, tmp_path / "out", files, "--do_predict", task="sst2"))
    lines = (tmp_path / "out" / "predict_results_sst2.txt").read_text().splitlines()
    assert lines[0] == "index\tprediction" and len(lines) == 6
    assert {line.split("\t")[1] for line in lines[1:]} <= {"negative", "positive"}


def test_mnli_evaluates_matched_and_mismatched(snapshot, tmp_path):
    names = ("entailment", "neutral", "contradiction")
    splits = {"train": 18, "validation": 9, "validation_mismatched": 6}
    files = write_task_files(tmp_path / "data", ("premise", "hypothesis"), lambda i: names[i % 3], splits=splits)
    saved = run_glue.main(argv(snapshot, tmp_path / "out", files, task="mnli"))
    assert saved["eval_samples"] == 9 and saved["eval_samples_mm"] == 6
    assert {"eval_accuracy", "eval_accuracy_mm"} <= set(saved)


def test_local_data_without_task_infers_labels_and_columns(snapshot, tmp_path):
    rows = [{"idx": i, "review": sentence(i), "label": ("pos", "neg", "meh")[i % 3]} for i in range(18)]
    files = {"--train_file": str(write_rows(tmp_path / "train.csv", rows)),
             "--validation_file": str(write_rows(tmp_path / "validation.csv", rows[:9]))}
    saved = run_glue.main(argv(snapshot, tmp_path / "out", files))
    assert set(saved) >= {"eval_accuracy"} and "eval_f1" not in saved
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["id2label"] == {"0": "meh", "1": "neg", "2": "pos"}


def test_local_regression_without_task_reports_mse(snapshot, tmp_path):
    files = write_task_files(tmp_path / "data", ("sentence1", "sentence2"), lambda i: i / 4)
    saved = run_glue.main(argv(snapshot, tmp_path / "out", files, "--bf16"))
    assert saved["eval_mse"] >= 0


def test_early_stopping_stops_when_the_metric_stalls(snapshot, tmp_path):
    files = write_task_files(tmp_path / "data", ("sentence",), binary)
    # A learning rate of 0 keeps the validation accuracy constant: the second evaluation exhausts patience 1.
    args = argv(snapshot, tmp_path / "out", files, "--max_steps", "20", "--learning_rate", "0",
                "--evaluation_strategy", "steps", "--eval_steps", "2", "--early_stopping_patience", "1", task="sst2")
    run_glue.main(args)
    state = json.loads((tmp_path / "out" / "trainer_state.json").read_text())
    assert state["global_step"] == 4
    assert [entry["step"] for entry in state["log_history"] if "eval_accuracy" in entry][:2] == [2, 4]


def test_seed_readme_command_runs_as_written(budget_snapshot, tmp_path):
    """The academic-budget-bert README's MRPC command, as a script on a BudgetBert snapshot, local files for the Hub."""
    files = write_task_files(tmp_path / "data", ("sentence1", "sentence2"), binary)
    output_dir = tmp_path / "finetuning"
    output_dir.mkdir()
    (output_dir / "stale.txt").write_text("from an earlier run")  # --overwrite_output_dir lets the run use it
    command = [
        sys.executable, str(RUN_GLUE), "--model_name_or_path", str(budget_snapshot), "--task_name", "MRPC",
        "--max_seq_length", "128", "--output_dir", str(output_dir), "--overwrite_output_dir", "--do_train",
        "--do_eval", "--evaluation_strategy", "steps", "--per_device_train_batch_size", "32",
        "--gradient_accumulation_steps", "1", "--per_device_eval_batch_size", "32", "--learning_rate", "5e-5",
        "--weight_decay", "0.01", "--eval_steps", "50", "--evaluation_strategy", "steps", "--max_grad_norm", "1.0",
        "--num_train_epochs", "5", "--lr_scheduler_type", "polynomial", "--warmup_steps", "50",
        *[token for pair in files.items() for token in pair],
    ]
    env = {**os.environ, "HF_DATASETS_CACHE": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1"}
    finished = subprocess.run(command, capture_output=True, text=True, env=env, cwd=tmp_path)
    assert finished.returncode == 0, finished.stdout[-3000:] + finished.stderr[-3000:]
    saved = read_results(output_dir)
    assert saved["epoch"] == 5 and {"eval_accuracy", "eval_f1"} <= set(saved)
    assert "eval_f1" in finished.stdout + finished.stderr  # the metrics are logged too
    config = json.loads((output_dir / "config.json").read_text())
    assert config["model_type"] == "budget-bert" and config["architectures"] == ["BudgetBertForSequenceClassification"]


def test_hub_task_fails_fast_offline(snapshot, tmp_path):
    # conftest sets HF_HUB_OFFLINE=1, as a machine without Hub access should.
    with pytest.raises(ConnectionError, match=r"nyu-mll/glue.*--train_file, --validation_file"):
        run_glue.main(argv(snapshot, tmp_path / "out", {}, task="mrpc"))


def test_missing_columns_name_the_file_and_column(snapshot, tmp_path):
    files = write_task_files(tmp_path / "data", ("text",), binary)
    with pytest.raises(ValueError, match=r"train\.csv: missing column\(s\) \['sentence'\]"):
        run_glue.main(argv(snapshot, tmp_path / "out", files, task="sst2"))


def test_labels_outside_the_task_are_refused(snapshot, tmp_path):
    files = write_task_files(tmp_path / "data", ("sentence1", "sentence2"), lambda i: i % 3)
    with pytest.raises(ValueError, match=r"train: labels \['2'\] are outside the task's label set"):
        run_glue.main(argv(snapshot, tmp_path / "out", files, task="rte"))


def test_classification_head_of_another_size_needs_ignore_mismatched_sizes(snapshot, tmp_path):
    finetuned = tmp_path / "finetuned-3-labels"
    AutoModelForSequenceClassification.from_pretrained(snapshot, num_labels=3).save_pretrained(finetuned)
    AutoTokenizer.from_pretrained(snapshot).save_pretrained(finetuned)
    files = write_task_files(tmp_path / "data", ("sentence",), binary, splits={"train": 8, "validation": 8})
    with pytest.raises(ValueError, match=r"head for 3 label\(s\).*needs 2 labels.*--ignore_mismatched_sizes"):
        run_glue.main(argv(finetuned, tmp_path / "out", files, task="sst2"))
    saved = run_glue.main(argv(finetuned, tmp_path / "out2", files, "--ignore_mismatched_sizes", task="sst2"))
    assert "eval_accuracy" in saved


def test_pretraining_snapshot_gets_a_new_head_with_a_warning(snapshot, tmp_path, caplog):
    files = write_task_files(tmp_path / "data", ("sentence",), binary, splits={"train": 8, "validation": 8})
    run_glue.main(argv(snapshot, tmp_path / "out", files, task="cola"))
    report = "\n".join(record.getMessage() for record in caplog.records if record.levelname == "WARNING")
    assert "classifier.weight" in report and "MISSING" in report and "newly initialized" in report


def test_budget_bert_snapshot_with_budget_bert_imported(budget_snapshot, tmp_path):
    files = write_task_files(tmp_path / "data", ("sentence1", "sentence2"), lambda i: i % 6 * 1.0)
    saved = run_glue.main(argv(budget_snapshot, tmp_path / "out", files, task="stsb"))
    assert "eval_spearmanr" in saved
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["architectures"] == ["BudgetBertForSequenceClassification"]
    assert config["problem_type"] == "regression"
    assert (tmp_path / "out" / "modeling_budget_bert.py").is_file()  # the finetuned folder loads remotely too


def test_a_float16_snapshot_finetunes_in_mixed_precision_with_float32_weights(budget_snapshot, tmp_path):
    # What a `deepspeed ... --fp16` pretraining run saves: its weights in float16, `dtype` float16 in the config.
    half = tmp_path / "half"
    BudgetBertForMaskedLM.from_pretrained(budget_snapshot).half().save_pretrained(half)
    AutoTokenizer.from_pretrained(budget_snapshot).save_pretrained(half)
    assert json.loads((half / "config.json").read_text())["dtype"] == "float16"
    files = write_task_files(tmp_path / "data", ("sentence",), binary)
    saved = run_glue.main(argv(half, tmp_path / "out", files, "--bf16", task="sst2"))
    assert 0.0 <= saved["eval_accuracy"] <= 1.0
    weights = load_file(tmp_path / "out" / "model.safetensors")
    assert {tensor.dtype for tensor in weights.values()} == {torch.float32}


def test_config_overrides_switch_a_snapshots_classifier_and_bad_ones_name_the_flag(budget_snapshot, tmp_path, caplog):
    files = write_task_files(tmp_path / "data", ("sentence",), binary, splits={"train": 8, "validation": 8})
    overrides = ["--config_overrides", "classifier_head=lm_head,classifier_pooling=mean"]
    run_glue.main(argv(budget_snapshot, tmp_path / "out", files, *overrides, task="sst2"))
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert (config["classifier_head"], config["classifier_pooling"]) == ("lm_head", "mean")
    finetuned = load_file(tmp_path / "out" / "model.safetensors")
    assert "lm_head.dense.weight" in finetuned and not any(name.startswith("budget_bert.pooler") for name in finetuned)
    report = "\n".join(record.getMessage() for record in caplog.records if "MISSING" in record.getMessage())
    assert "classifier.weight" in report and "lm_head.dense" not in report and "lm_head.norm" not in report
    bad = ["--config_overrides", "classifier_heads=lm_head"]
    with pytest.raises(ValueError, match=r"--config_overrides classifier_heads=lm_head: .*keys of the BudgetBertConfig"):
        run_glue.main(argv(budget_snapshot, tmp_path / "out2", files, *bad, task="sst2"))


def test_trust_remote_code_loads_the_snapshot_code(budget_snapshot, tmp_path):
    """A snapshot of a model type this process does not know loads through the code saved next to it."""
    remote = tmp_path / "remote_snapshot"
    remote.mkdir()
    for file in budget_snapshot.iterdir():
        (remote / file.name).write_bytes(file.read_bytes())
    config = json.loads((remote / "config.json").read_text())
    (remote / "config.json").write_text(json.dumps({**config, "model_type": "budget-bert-unregistered"}))
    files = write_task_files(tmp_path / "data", ("sentence",), binary, splits={"train": 8, "validation": 8})
    with pytest.raises(ValueError, match="trust_remote_code"):
        run_glue.main(argv(remote, tmp_path / "refused", files, task="sst2"))
    saved = run_glue.main(argv(remote, tmp_path / "out", files, "--trust_remote_code", task="sst2"))
    assert "eval_accuracy" in saved
    remote_modules = [name for name in sys.modules if name.startswith("transformers_modules.")]
    assert any(name.endswith(".modeling_budget_bert") for name in remote_modules)


def test_sweep_over_two_tasks_and_two_learning_rates_resumes(snapshot, tmp_path):
    data_dir = tmp_path / "glue"
    write_task_files(data_dir / "sst2", ("sentence",), binary, splits={"train": 16, "validation": 8})
    write_task_files(data_dir / "mrpc", ("sentence1", "sentence2"), binary, "jsonl", {"train": 16, "validation": 8})
    output_dir = tmp_path / "sweep"
    command = [
        "--model_name_or_path", str(snapshot), "--output_dir", str(output_dir), "--tasks", "sst2", "MRPC",
        "--learning_rates", "1e-3", "2e-3", "--batch_sizes", "8", "--seeds", "3", "--data_dir", str(data_dir),
        "--", "--max_steps", "2", "--use_cpu", "--report_to", "none", "--disable_tqdm", "true",
        "--max_seq_length", "16", "--cache_dir", str(tmp_path / "cache"),
    ]
    calls = []

    def in_process(run_argv: list[str], log_file: Path) -> None:
        calls.append(run_argv)
        run_glue.main(run_argv)

    assert sweep.main(command, runner=in_process) == 0
    assert len(calls) == 4
    results = output_dir / "results"
    assert {path.name for path in results.iterdir()} == {
        "sst2.md", "sst2.csv", "mrpc.md", "mrpc.csv", "summary.md", "summary.csv"
    }
    f1 = {
        learning_rate: 100 * read_results(output_dir / "runs" / "mrpc" / f"lr{learning_rate}_bs8_seed3")["eval_f1"]
        for learning_rate in ("0.001", "0.002")
    }
    with (results / "mrpc.csv").open() as file:
        rows = {row["learning_rate"]: row for row in csv.DictReader(file)}
    assert {rate: float(row["f1 median"]) for rate, row in rows.items()} == pytest.approx(f1)
    assert "| 0.001 | 8 | 1/1 |" in (results / "mrpc.md").read_text()
    with (results / "summary.csv").open() as file:
        summary = {row["task"]: row for row in csv.DictReader(file)}
    assert float(summary["mrpc"]["score (median, best config)"]) == pytest.approx(max(f1.values()))
    average = summary["GLUE average (2 of 8 tasks)"]["score (median, best config)"]
    expected = (max(f1.values()) + float(summary["sst2"]["score (median, best config)"])) / 2
    assert float(average) == pytest.approx(expected)

    calls.clear()
    assert sweep.main(command, runner=in_process) == 0
    assert calls == []  # every run finished: nothing runs again

    (output_dir / "runs" / "sst2" / "lr0.002_bs8_seed3" / "all_results.json").unlink()
    assert sweep.main(command, runner=in_process) == 0
    assert [run_argv[run_argv.index("--output_dir") + 1] for run_argv in calls] == [
        str(output_dir / "runs" / "sst2" / "lr0.002_bs8_seed3")
    ]
