"""BudgetBertConfig: defaults, validation, padded vocabulary, serialisation."""

import json

import pytest

from budget_bert import BudgetBertConfig
from budget_bert.configuration_budget_bert import DEFAULT_AUTO_MAP


def test_defaults_are_bert_base_pre_ln():
    config = BudgetBertConfig()
    assert (config.vocab_size, config.hidden_size, config.num_hidden_layers) == (30522, 768, 12)
    assert (config.num_attention_heads, config.intermediate_size) == (12, 3072)
    assert config.encoder_ln_mode == "pre-ln"
    assert config.sparse_mask_prediction is True
    assert config.pad_vocab_size_multiple == 8
    assert config.model_type == "budget-bert"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("encoder_ln_mode", "sandwich-ln"),
        ("layer_norm_type", "batchnorm"),
        ("hidden_act", "no-such-activation"),
        ("vocab_size", 0),
        ("hidden_size", -8),
        ("num_hidden_layers", 0),
        ("intermediate_size", 0),
        ("pad_vocab_size_multiple", 0),
        ("hidden_dropout_prob", 1.5),
        ("attention_probs_dropout_prob", -0.1),
        ("layer_norm_eps", 0.0),
    ],
)
def test_bad_value_raises_value_error_naming_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        BudgetBertConfig(**{field: value})


def test_heads_must_divide_hidden_size():
    with pytest.raises(ValueError, match="num_attention_heads"):
        BudgetBertConfig(hidden_size=100, num_attention_heads=12)


def test_all_problems_are_reported_at_once():
    with pytest.raises(ValueError) as error:
        BudgetBertConfig(encoder_ln_mode="x", layer_norm_type="y", vocab_size=-1)
    message = str(error.value)
    assert "encoder_ln_mode" in message and "layer_norm_type" in message and "vocab_size" in message


@pytest.mark.parametrize(
    ("vocab_size", "multiple", "padded"), [(30522, 8, 30528), (53, 8, 56), (64, 8, 64), (53, 1, 53)]
)
def test_padded_vocab_size_rounds_up(vocab_size, multiple, padded):
    config = BudgetBertConfig(vocab_size=vocab_size, pad_vocab_size_multiple=multiple)
    assert config.padded_vocab_size == padded


def test_save_and_load_keep_every_field_and_the_auto_map(tmp_path):
    config = BudgetBertConfig(
        hidden_size=64,
        num_attention_heads=4,
        encoder_ln_mode="post-ln",
        layer_norm_type="rmsnorm",
        layernorm_embedding=False,
        sparse_mask_prediction=False,
        pad_vocab_size_multiple=64,
    )
    config.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["model_type"] == "budget-bert"
    assert saved["auto_map"] == DEFAULT_AUTO_MAP
    loaded = BudgetBertConfig.from_pretrained(tmp_path)
    for name in ("hidden_size", "encoder_ln_mode", "layer_norm_type", "layernorm_embedding",
                 "sparse_mask_prediction", "pad_vocab_size_multiple"):
        assert getattr(loaded, name) == getattr(config, name)
