"""run_mlm.py trains any masked LM that AutoModelForMaskedLM knows (`--config_name`, `--model_type`,
`--config_overrides`) under the same budget, LR curve, validation, markers and snapshots: stock BERT and ModernBERT.

The runs call `run_mlm.main` in this process on a fake clock (one second of budget per step), so each takes the same
steps on any machine and finishes in seconds.
"""

import json
import math

import pytest
import torch
from safetensors.torch import load_file
from transformers import (
    AutoModelForMaskedLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    BertConfig,
    BertForMaskedLM,
    ModernBertConfig,
    ModernBertForMaskedLM,
)

from budget_bert.pretraining.recipe import recipe_value
from trainer_callbacks import SnapshotInfo
from trainer_callbacks.lr_curves import lr_factor
from pretraining_fixtures import fake_clock, import_run_mlm, prepared_data  # noqa: F401 - fixture


BUDGET_SECONDS = 24.0  # fake seconds: about 24 steps
LEARNING_RATE = 2e-3
WARMUP = 0.25


def tiny_bert(folder) -> str:
    BertConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128,
               max_position_embeddings=64).save_pretrained(folder)
    return str(folder)  # a folder; a config.json file works too


def tiny_modernbert(folder) -> str:
    # ModernBERT's recipe: no dropout (its default), a gated MLP of 2/3 the width, a masked-only head.
    config = ModernBertConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=96,
                              max_position_embeddings=64, local_attention=16, sparse_prediction=True)
    config.save_pretrained(folder)
    return str(folder / "config.json")


def train(prepared, output_dir, config_name, *extra):
    argv = [
        "--dataset_path", str(prepared.dataset), "--output_dir", str(output_dir), "--config_name", config_name,
        "--total_training_time", str(BUDGET_SECONDS / 3600), "--lr", str(LEARNING_RATE),
        "--warmup_proportion", str(WARMUP), "--per_device_train_batch_size", "8", "--print_steps", "1",
        "--do_validation", "--validation_epochs", "1", "--finetune_time_markers", "0.5", "--disable_tqdm", "true",
        "--report_to", "none", "--seed", "0", *extra,
    ]
    import_run_mlm().main(argv, clock=fake_clock(argv))
    return json.loads((output_dir / "trainer_state.json").read_text())


@pytest.mark.parametrize(
    ("make_config", "model_class"), [(tiny_bert, BertForMaskedLM), (tiny_modernbert, ModernBertForMaskedLM)]
)
def test_a_stock_masked_lm_trains_inside_the_budget_and_its_snapshots_load(
    make_config, model_class, prepared_data, tmp_path
):
    output_dir = tmp_path / "out"
    config_name = make_config(tmp_path / "config")
    state = train(prepared_data, output_dir, config_name)

    train_logs = [entry for entry in state["log_history"] if "loss" in entry]
    elapsed = [entry["budget_elapsed_hours"] * 3600 for entry in train_logs]
    # Stopped by the budget: at the first step that reached it.
    assert elapsed[-2] < BUDGET_SECONDS <= elapsed[-1] and state["global_step"] == len(train_logs)
    # The time-based LR curve: each step's rate is the factor of the budget used when the step before ended.
    used_before = [0.0, *elapsed[:-1]]
    curve = recipe_value("curve")
    expected = [LEARNING_RATE * lr_factor(seconds / BUDGET_SECONDS, WARMUP, curve) for seconds in used_before]
    assert [entry["learning_rate"] for entry in train_logs] == pytest.approx(expected)
    assert all(math.isfinite(entry["loss"]) for entry in train_logs)
    # Validation after every shard and at the end; a snapshot at the marker and at the end.
    assert [entry for entry in state["log_history"] if "eval_loss" in entry]
    snapshots = output_dir / "finetune_snapshots"
    assert sorted(path.name for path in snapshots.iterdir()) == ["end", "marker-0.50"]
    marker = SnapshotInfo.load(snapshots / "marker-0.50")
    assert marker.budget_seconds == BUDGET_SECONDS and marker.budget_fraction >= 0.5

    for name in ("marker-0.50", "end"):
        model = AutoModelForMaskedLM.from_pretrained(snapshots / name)
        assert type(model) is model_class
        tokenizer = AutoTokenizer.from_pretrained(snapshots / name)
        # The tokenizer's vocabulary and special tokens, not the config's own.
        assert model.config.vocab_size == len(tokenizer) == prepared_data.vocab_size
        assert model.config.pad_token_id == tokenizer.pad_token_id
    classifier = AutoModelForSequenceClassification.from_pretrained(snapshots / "end", num_labels=2)
    assert classifier.config.num_labels == 2
    arguments = json.loads((snapshots / "end" / "run_arguments.json").read_text())
    assert arguments["ModelArguments"]["config_name"] == config_name


def test_model_type_and_overrides_train_a_modernbert_from_its_default_config(prepared_data, tmp_path):
    output_dir = tmp_path / "out"
    argv = [
        "--dataset_path", str(prepared_data.dataset), "--output_dir", str(output_dir), "--model_type", "modernbert",
        "--config_overrides", "hidden_size=32,num_hidden_layers=2,num_attention_heads=2,intermediate_size=48,"
        "local_attention=16,max_position_embeddings=64",
        "--total_training_time", str(8 / 3600), "--per_device_train_batch_size", "8", "--disable_tqdm", "true",
    ]
    import_run_mlm().main(argv, clock=fake_clock(argv))
    model = AutoModelForMaskedLM.from_pretrained(output_dir / "finetune_snapshots" / "end")
    assert type(model) is ModernBertForMaskedLM and model.config.hidden_size == 32
    assert model.config.cls_token_id == AutoTokenizer.from_pretrained(output_dir).cls_token_id


def test_a_float16_checkpoint_continues_in_float32_weights_under_mixed_precision(prepared_data, tmp_path):
    # A `deepspeed ... --fp16` run saves its snapshots in float16; continuing one trains float32 weights under
    # autocast, as the Trainer's mixed precision expects.
    first = tmp_path / "first"
    train(prepared_data, first, tiny_bert(tmp_path / "config"))
    half = tmp_path / "half"
    BertForMaskedLM.from_pretrained(first / "finetune_snapshots" / "end").half().save_pretrained(half)
    argv = [
        "--dataset_path", str(prepared_data.dataset), "--output_dir", str(tmp_path / "second"),
        "--model_name_or_path", str(half), "--total_training_time", str(4 / 3600), "--lr", str(LEARNING_RATE),
        "--per_device_train_batch_size", "8", "--print_steps", "1", "--disable_tqdm", "true", "--report_to", "none",
        "--bf16", "--seed", "0",
    ]
    import_run_mlm().main(argv, clock=fake_clock(argv))
    weights = load_file(tmp_path / "second" / "finetune_snapshots" / "end" / "model.safetensors")
    assert {tensor.dtype for tensor in weights.values()} == {torch.float32}
