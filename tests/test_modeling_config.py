"""BudgetBertConfig: defaults, validation, padded vocabulary, serialisation."""

import json

import pytest
from huggingface_hub.errors import StrictDataclassFieldValidationError

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


def test_architecture_options_default_to_berts_behaviour():
    config = BudgetBertConfig()
    assert (config.mlp_type, config.position_embedding_type, config.rope_theta) == ("mlp", "absolute", 10000.0)
    assert (config.linear_bias, config.norm_bias, config.decoder_bias) == (True, True, True)
    assert (config.qk_norm, config.scale_residual_init, config.scale_head_init) == (False, False, False)
    assert (config.classifier_head, config.classifier_pooling) == ("pooler", "cls")


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
        ("mlp_type", "swiglu"),
        ("position_embedding_type", "alibi"),
        ("rope_theta", 0.0),
    ],
)
def test_bad_value_raises_value_error_naming_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        BudgetBertConfig(**{field: value})


def test_heads_must_divide_hidden_size():
    with pytest.raises(ValueError, match="num_attention_heads"):
        BudgetBertConfig(hidden_size=100, num_attention_heads=12)


def test_rotary_positions_need_an_even_head_size():
    BudgetBertConfig(hidden_size=12, num_attention_heads=4)  # head size 3 is fine with absolute positions
    with pytest.raises(ValueError, match="position_embedding_type.*head size"):
        BudgetBertConfig(hidden_size=12, num_attention_heads=4, position_embedding_type="rope")


@pytest.mark.parametrize("field", ["linear_bias", "norm_bias", "decoder_bias", "qk_norm", "scale_residual_init",
                                   "scale_head_init"])
def test_switches_must_be_booleans(field):
    with pytest.raises(StrictDataclassFieldValidationError, match=f"{field}.*expected bool"):
        BudgetBertConfig(**{field: "no"})


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
        mlp_type="glu",
        position_embedding_type="rope",
        rope_theta=160000.0,
        linear_bias=False,
        norm_bias=False,
        decoder_bias=False,
        qk_norm=True,
        scale_residual_init=True,
        scale_head_init=True,
        classifier_head="lm_head",
        classifier_pooling="mean",
    )
    config.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["model_type"] == "budget-bert"
    assert saved["auto_map"] == DEFAULT_AUTO_MAP
    loaded = BudgetBertConfig.from_pretrained(tmp_path)
    for name in ("hidden_size", "encoder_ln_mode", "layer_norm_type", "layernorm_embedding",
                 "sparse_mask_prediction", "pad_vocab_size_multiple", "mlp_type", "position_embedding_type",
                 "rope_theta", "linear_bias", "norm_bias", "decoder_bias", "qk_norm", "scale_residual_init",
                 "scale_head_init", "classifier_head", "classifier_pooling"):
        assert getattr(loaded, name) == getattr(config, name)
