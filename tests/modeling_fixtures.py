"""The tiny BudgetBert shape that the model tests share (dropout off, so outputs are deterministic)."""

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


def tiny_config(**overrides) -> BudgetBertConfig:
    """`TINY` as a `BudgetBertConfig`, with `overrides` applied."""
    return BudgetBertConfig(**{**TINY, **overrides})
