"""run_glue.py's argument parsing: legacy flag spellings, validation messages, early-stopping metric."""

import json

import pytest
from transformers import TrainingArguments

from budget_bert.glue.glue_arguments import (
    DataArguments,
    FinetuneArguments,
    parse_args,
    resolve_flag_aliases,
    resolve_key_aliases,
    with_best_model_metric,
)

SEED_COMMAND = (
    "--model_name_or_path snap --task_name MRPC --max_seq_length 128 --output_dir out --overwrite_output_dir "
    "--do_train --do_eval --evaluation_strategy steps --per_device_train_batch_size 32 "
    "--gradient_accumulation_steps 1 --per_device_eval_batch_size 32 --learning_rate 5e-5 --weight_decay 0.01 "
    "--eval_steps 50 --evaluation_strategy steps --max_grad_norm 1.0 --num_train_epochs 5 "
    "--lr_scheduler_type polynomial --warmup_steps 50"
).split()


def test_seed_readme_command_parses_to_transformers_5_arguments():
    model_args, data_args, finetune_args, training_args = parse_args(SEED_COMMAND)
    assert model_args.model_name_or_path == "snap"
    assert data_args.task_name == "mrpc" and data_args.max_seq_length == 128
    assert finetune_args.overwrite_output_dir is True
    assert training_args.eval_strategy == "steps" and training_args.eval_steps == 50
    assert training_args.lr_scheduler_type == "polynomial" and training_args.learning_rate == 5e-5
    assert training_args.average_tokens_across_devices is False  # run_glue's default, see glue_arguments.py


def test_explicit_average_tokens_across_devices_wins(tmp_path):
    *_, training_args = parse_args([*SEED_COMMAND, "--average_tokens_across_devices", "true"])
    assert training_args.average_tokens_across_devices is True
    path = tmp_path / "args.json"
    path.write_text(json.dumps({"model_name_or_path": "m", "task_name": "rte", "output_dir": "o", "do_eval": True}))
    assert parse_args([str(path)])[-1].average_tokens_across_devices is False


def test_legacy_spelling_is_an_alias_and_repeats_must_agree():
    assert resolve_flag_aliases(["--evaluation_strategy", "steps", "--eval-strategy=steps", "--x", "1"]) == [
        "--eval_strategy", "steps", "--eval_strategy=steps", "--x", "1"
    ]
    with pytest.raises(ValueError, match="--eval_strategy is given different values: --evaluation_strategy steps, "
                                         "--eval_strategy epoch"):
        resolve_flag_aliases(["--evaluation_strategy", "steps", "--eval_strategy", "epoch"])
    assert resolve_key_aliases({"evaluation_strategy": "epoch", "seed": 3}) == {"eval_strategy": "epoch", "seed": 3}
    with pytest.raises(ValueError, match="given different values"):
        resolve_key_aliases({"evaluation_strategy": "epoch", "eval_strategy": "steps"})


def test_json_argument_file_accepts_the_legacy_spelling(tmp_path):
    path = tmp_path / "args.json"
    path.write_text(json.dumps({"model_name_or_path": "snap", "task_name": "rte", "output_dir": "out",
                                "do_eval": True, "evaluation_strategy": "epoch"}))
    _, data_args, _, training_args = parse_args([str(path)])
    assert data_args.task_name == "rte" and training_args.eval_strategy == "epoch"


def test_data_arguments_collect_every_problem():
    with pytest.raises(ValueError) as error:
        DataArguments(task_name="sst3", train_file="a.csv", validation_file="b.json",
                      validation_mismatched_file="c.csv")
    message = str(error.value)
    assert "--task_name: Unknown GLUE task 'sst3'" in message
    assert "must all be csv or all json(l)" in message
    assert "--validation_mismatched_file is for --task_name mnli only" in message
    with pytest.raises(ValueError, match=r"No data: pass --task_name .* or local files"):
        DataArguments()
    with pytest.raises(ValueError, match=r"must end in .csv, .json or .jsonl, got: txt"):
        DataArguments(train_file="train.txt")


def test_early_stopping_needs_evaluations_during_training():
    with pytest.raises(ValueError, match=r"--early_stopping_patience needs evaluations during training"):
        parse_args(["--model_name_or_path", "m", "--task_name", "rte", "--output_dir", "o", "--do_train",
                    "--early_stopping_patience", "2"])
    with pytest.raises(ValueError, match="--early_stopping_patience must be at least 1"):
        FinetuneArguments(early_stopping_patience=0)


def test_local_data_must_cover_what_the_run_does():
    with pytest.raises(ValueError) as error:
        parse_args(["--model_name_or_path", "m", "--validation_file", "v.csv", "--output_dir", "o", "--do_train",
                    "--do_predict"])
    assert "--do_train with local data needs --train_file" in str(error.value)
    assert "--do_predict with local data needs --test_file" in str(error.value)
    with pytest.raises(ValueError, match="Nothing to do"):
        parse_args(["--model_name_or_path", "m", "--task_name", "rte", "--output_dir", "o"])


def test_best_model_metric_defaults_to_the_headline_unless_chosen():
    args = TrainingArguments(output_dir="o", eval_strategy="steps", use_cpu=True)
    tracked = with_best_model_metric(args, "mse", greater_is_better=False)
    assert (tracked.metric_for_best_model, tracked.greater_is_better) == ("mse", False)
    assert args.metric_for_best_model is None  # the original is left alone
    chosen = TrainingArguments(output_dir="o", eval_strategy="steps", use_cpu=True, metric_for_best_model="accuracy")
    assert with_best_model_metric(chosen, "f1", greater_is_better=True) is chosen


@pytest.mark.parametrize(("flags", "greater_is_better"), [
    (["--metric_for_best_model", "mse"], False),  # the Trainer alone would maximise it
    (["--metric_for_best_model", "eval_mse"], False),
    (["--metric_for_best_model", "mse", "--greater_is_better", "true"], True),  # told: the flag wins
    (["--metric_for_best_model", "mse", "--greater-is-better=true"], True),
    (["--metric_for_best_model", "accuracy"], True),
    (["--metric_for_best_model", "loss"], False),
])
def test_a_metric_where_lower_is_better_is_minimised_unless_told(flags, greater_is_better):
    *_, training_args = parse_args([*SEED_COMMAND, *flags])
    assert training_args.greater_is_better is greater_is_better
