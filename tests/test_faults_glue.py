"""run_glue.py on a finetuned model and local binary data: the model's labels, the binary metrics, the headline."""

import json

import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from budget_bert.cli import run_cli
from test_glue_run import argv, make_split, run_glue, save_snapshot, write_rows
from transformers import BertConfig, BertForMaskedLM


def _finetuned(root, names):
    """A model finetuned on the labels `names` (in id order) whose head always answers the first."""
    snapshot = save_snapshot(root / "snapshot", BertConfig, BertForMaskedLM)
    model = AutoModelForSequenceClassification.from_pretrained(
        snapshot, num_labels=2, id2label=dict(enumerate(names)), label2id={name: i for i, name in enumerate(names)}
    )
    with torch.no_grad():
        model.classifier.weight.zero_()
        model.classifier.bias.copy_(torch.tensor([5.0, -5.0]))
    model.save_pretrained(root / "model")
    AutoTokenizer.from_pretrained(snapshot).save_pretrained(root / "model")
    return root / "model"


@pytest.fixture(scope="module")
def finetuned(tmp_path_factory):
    """A model finetuned on labels "0" and "1" whose head always answers "0"."""
    return _finetuned(tmp_path_factory.mktemp("finetuned"), ("0", "1"))


def _evaluate_only(model, output_dir, validation, *extra):
    args = argv(model, output_dir, {"--validation_file": str(validation)}, *extra)
    return run_glue.main([token for token in args if token != "--do_train"])


def test_evaluation_on_fewer_classes_keeps_the_finetuned_head(finetuned, tmp_path):
    validation = write_rows(tmp_path / "validation.csv", make_split(("sentence",), lambda i: 1, 8))
    saved = _evaluate_only(finetuned, tmp_path / "out", validation, "--ignore_mismatched_sizes")
    # The saved head answers "0" to everything: on a file of "1"s it scores 0, not the 1.0 of a fresh 1-label head.
    assert saved["eval_accuracy"] == 0.0


def test_labels_in_another_order_than_the_data_sorts_them_keep_the_models_ids(tmp_path):
    model = _finetuned(tmp_path / "model", ("pos", "neg"))  # always answers "pos", its label 0
    rows = make_split(("sentence",), lambda i: "neg" if i < 2 else "pos", 8)
    saved = _evaluate_only(model, tmp_path / "out", write_rows(tmp_path / "validation.csv", rows))
    # Sorted, the data's labels would make "neg" label 0: the head's answers would all read as "neg" (0.25).
    assert saved["eval_accuracy"] == 0.75


def test_binary_local_data_reports_accuracy_f1_and_matthews(finetuned, tmp_path):
    rows = make_split(("sentence",), lambda i: i % 2, 8)
    saved = _evaluate_only(finetuned, tmp_path / "out", write_rows(tmp_path / "validation.csv", rows))
    assert saved["eval_accuracy"] == 0.5 and saved["eval_f1"] == 0.0 and saved["eval_matthews_correlation"] == 0.0
    assert "eval_combined_score" in saved


def test_metric_for_best_model_picks_the_headline_and_must_be_reported(finetuned, tmp_path):
    files = {
        "--train_file": str(write_rows(tmp_path / "train.csv", make_split(("sentence",), lambda i: i % 2, 16))),
        "--validation_file": str(write_rows(tmp_path / "validation.csv", make_split(("sentence",), lambda i: i % 2, 8))),
    }
    flags = ("--eval_strategy", "steps", "--eval_steps", "2", "--early_stopping_patience", "1",
             "--learning_rate", "0")
    with pytest.raises(ValueError, match="--metric_for_best_model spearmanr: this run reports no such metric"):
        run_glue.main(argv(finetuned, tmp_path / "bad", files, *flags, "--metric_for_best_model", "spearmanr"))
    assert not (tmp_path / "bad" / "all_results.json").exists()

    run_glue.main(argv(finetuned, tmp_path / "out", files, *flags, "--metric_for_best_model", "eval_f1"))
    state = json.loads((tmp_path / "out" / "trainer_state.json").read_text())
    assert state["best_metric"] == 0.0 and state["global_step"] == 4  # f1 never moves off 0: patience 1 stops


@pytest.mark.parametrize(
    ("train", "validation", "problems"),
    [
        ("sentence,label\n", "sentence,label\na b,0\n",
         ["--train_file {train}: cannot be read as csv (it has a header but no rows)"]),
        ("", "sentence,label\na b,0\n", ["--train_file {train}: cannot be read as csv (the file is empty)"]),
        ("sentence,label\na b,0\n", "text,label\na b,0\n",
         ["The local files have different columns (--train_file {train} has ['sentence', 'label'], "
          "--validation_file {validation} has ['text', 'label'])"]),
        ("sentence\na b\n", "sentence\nc d\n",
         ["--train_file {train}: missing column(s) ['label']", "--validation_file {validation}: missing column(s)"]),
    ],
)
def test_bad_local_files_are_one_line_each_naming_the_flag(finetuned, tmp_path, capsys, train, validation, problems):
    paths = {"train": tmp_path / "train.csv", "validation": tmp_path / "validation.csv"}
    paths["train"].write_text(train)
    paths["validation"].write_text(validation)
    files = {"--train_file": str(paths["train"]), "--validation_file": str(paths["validation"])}
    with pytest.raises(SystemExit) as exited:
        run_cli("run_glue.py", run_glue.main, argv(finetuned, tmp_path / "out", files))
    assert exited.value.code == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("run_glue.py: error: ")]
    assert len(lines) == len(problems)
    for line, problem in zip(lines, problems):
        assert line.startswith("run_glue.py: error: " + problem.format(**paths))
