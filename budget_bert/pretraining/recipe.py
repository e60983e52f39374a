"""The recommended recipe: what every `run_mlm.py` flag the user does not give defaults to.

One table, `RECIPE`, maps each flag to its default and the reason for it; the argument dataclasses and the parser
read their defaults from it, so a flag that is given always wins (the seed's example command keeps its exact
meaning) and the README's "Recommended recipe" section is checked against it by the tests. The figures behind each
choice are in docs/benchmarks.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class RecipeDefault:
    """One default of the recipe: the flag's value and why it was chosen."""

    value: Any
    reason: str


RECIPE: dict[str, RecipeDefault] = {
    # The model (BudgetBert only; other models keep their own config).
    "mlp_type": RecipeDefault(
        "glu", "gated MLP (GeGLU with gelu), as ModernBERT; at the same parameter count it learns more per step"
    ),
    "position_embedding_type": RecipeDefault(
        "rope", "rotary positions, as ModernBERT: no position table to learn from scratch"
    ),
    "linear_bias": RecipeDefault(False, "no biases in the encoder's linear layers (ModernBERT): fewer ops per step"),
    "norm_bias": RecipeDefault(False, "no LayerNorm biases (ModernBERT)"),
    "qk_norm": RecipeDefault(
        False,
        "no QK-norm: it costs 9-12% of a CPU step at 4 x 256, and at equal time (230 steps against 200) the model "
        "without it was lower with 3 of 4 seeds (median 258 against 297); without it LR 1e-3 and 2e-3 trained "
        "stably (120 steps, 3 seeds each)",
    ),
    "scale_residual_init": RecipeDefault(
        False,
        "BERT's initialisation: ModernBERT's smaller output layers (with --scale_head_init) lead after 50 steps "
        "(500/504 against 544/553) but trail after 120 (393/478 against 379/444)",
    ),
    "scale_head_init": RecipeDefault(False, "off with --scale_residual_init (measured together)"),
    "classifier_head": RecipeDefault(
        "lm_head", "the finetuned classifier starts from the pretrained MLM head's transform (ModernBERT's)"
    ),
    "classifier_pooling": RecipeDefault(
        "mean",
        "the mean over the tokens: movie-review accuracy 0.719 against 0.689 with [CLS] (medians of 3 finetuning "
        "seeds)",
    ),
    "hidden_dropout_prob": RecipeDefault(
        0.0, "no dropout: a budget run sees little data more than once, and the masks are cheaper to skip"
    ),
    "attention_probs_dropout_prob": RecipeDefault(0.0, "no attention dropout (lets SDPA run its fused kernel)"),
    # Masking.
    "mlm_probability": RecipeDefault(
        0.3, "30% masking (ModernBERT; Wettig et al. 2023): twice the predictions per step of BERT's 15%"
    ),
    # The optimizer (TrainingArguments flags; the seed's twins --lr, --gradient_clipping, --adam_eps override too).
    "learning_rate": RecipeDefault(
        1e-3,
        "the seed's; with the wsd curve after 120 steps 304 against 388 at 2e-3 (medians of 3 seeds); transformers' "
        "5e-5 barely moves"
    ),
    "weight_decay": RecipeDefault(0.01, "the seed's and BERT's"),
    "adam_beta1": RecipeDefault(0.9, "the seed's"),
    "adam_beta2": RecipeDefault(0.98, "the seed's (RoBERTa's): steadier than 0.999 at a high LR"),
    "adam_epsilon": RecipeDefault(1e-6, "the seed's"),
    "max_grad_norm": RecipeDefault(0.0, "no clipping, as the seed: it costs a pass over the gradients every step"),
    # The time curve.
    "warmup_proportion": RecipeDefault(0.06, "the seed's 6% of the budget"),
    "curve": RecipeDefault(
        "wsd",
        "warmup, the peak LR, then a 1-sqrt cooldown over the last 20% (ModernBERT's): after 120 steps at LR 1e-3 "
        "perplexity 284/307/304 against 372/373/377 for linear decay (seeds 0-2)",
    ),
}
"""Every default of the recipe, keyed by flag name (without `--`)."""


def recipe_value(flag: str) -> Any:
    """The recipe's default for `flag`."""
    return RECIPE[flag].value


def default_intermediate_size(hidden_size: int, mlp_type: str) -> int:
    """
    The feed-forward width when `--intermediate_size` is not given: BERT's 4 x hidden for an ungated MLP, and for
    a gated one the width of each half that has the same parameter count, 2/3 of that (rounded up to a multiple of
    8 for aligned matrix products).
    """
    if mlp_type == "glu":
        return -(-8 * hidden_size // 3 // 8) * 8
    return 4 * hidden_size
