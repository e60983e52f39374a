"""The tiny BudgetBert shape that the model tests share (dropout off, so outputs are deterministic), and the
architecture option combinations that the cross-cutting tests run over."""

import pytest

from budget_bert import BudgetBertConfig


TINY = dict(
    vocab_size=53,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=48,
    max_position_embeddings=32,
    hidden_dropout_prob=0.0,
    attention_probs_dropout_prob=0.0,
)

# Every new switch on (ModernBERT-like, plus qk norm and scaled init), and a mix that covers the other branches:
# post-LN with rotary positions, SwiGLU, RMSNorm, biases on except the decoder's, BERT's pooler on the mean.
MODERN = dict(
    mlp_type="glu",
    position_embedding_type="rope",
    linear_bias=False,
    norm_bias=False,
    decoder_bias=False,
    qk_norm=True,
    scale_residual_init=True,
    scale_head_init=True,
    classifier_head="lm_head",
    classifier_pooling="mean",
)
MIXED = dict(
    encoder_ln_mode="post-ln",
    layer_norm_type="rmsnorm",
    mlp_type="glu",
    hidden_act="silu",
    position_embedding_type="rope",
    rope_theta=500.0,
    decoder_bias=False,
    classifier_pooling="mean",
)
OPTION_SETS = [
    pytest.param({}, id="bert-options"),
    pytest.param(MODERN, id="modern"),
    pytest.param(MIXED, id="mixed"),
]


def tiny_config(**overrides) -> BudgetBertConfig:
    """`TINY` as a `BudgetBertConfig`, with `overrides` applied."""
    return BudgetBertConfig(**{**TINY, **overrides})
