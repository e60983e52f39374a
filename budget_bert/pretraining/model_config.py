"""The config of the model `run_mlm.py` pretrains, built (and proven buildable) while the flags are parsed.

Three sources, as in HuggingFace's run_mlm.py: `--model_name_or_path` (continue a checkpoint), `--config_name` (a
config file or folder of any masked LM that `AutoModelForMaskedLM` knows), or `--model_type` (BudgetBert from its
shape flags by default; any other masked-LM type from its default config). `--config_overrides "k=v,k=v"` changes
fields of the last two, with HuggingFace's syntax. The vocabulary and special-token ids come from the tokenizer
when the model is built (`config_for_tokenizer`).
"""

from __future__ import annotations

import re
from collections.abc import Collection
from typing import Any

import torch
from transformers import AutoConfig, AutoModelForMaskedLM, PretrainedConfig, PreTrainedModel, PreTrainedTokenizerBase
from huggingface_hub.errors import StrictDataclassError
from transformers.models.auto.modeling_auto import MODEL_FOR_MASKED_LM_MAPPING_NAMES

from budget_bert import BudgetBertConfig
from budget_bert.cli import UsageError, parse_config_overrides
from budget_bert.pretraining.recipe import default_intermediate_size


BUDGET_BERT_TYPES = (BudgetBertConfig.model_type, "bert-mlm")
"""`--model_type` values that mean BudgetBert (`bert-mlm` is the seed's name)."""
BUDGET_BERT_SHAPE_FLAGS = (
    "hidden_act", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "mlp_type",
    "position_embedding_type", "linear_bias", "norm_bias", "qk_norm", "scale_residual_init", "scale_head_init",
    "hidden_dropout_prob", "attention_probs_dropout_prob", "encoder_ln_mode", "layer_norm_type",
    "max_position_embeddings", "classifier_head", "classifier_pooling",
)
"""The flags that shape a fresh BudgetBert (each a `BudgetBertConfig` field of the same name)."""
_SPECIAL_TOKEN_IDS = ("pad_token_id", "cls_token_id", "sep_token_id", "bos_token_id", "eos_token_id")
# A config's own name for each special token of a BERT tokenizer: ModernBERT's bos and eos are [CLS] and [SEP].
_TOKEN_FOR_ID = {"bos_token_id": "cls_token_id", "eos_token_id": "sep_token_id"}


def masked_lm_types() -> list[str]:
    """Every `--model_type`: BudgetBert's names and the model types `AutoModelForMaskedLM` knows."""
    return [*BUDGET_BERT_TYPES, *sorted(MODEL_FOR_MASKED_LM_MAPPING_NAMES)]


def build_model_config(
    model_type: str,
    config_name: str | None,
    config_overrides: str | None,
    model_name_or_path: str | None,
    shape: dict[str, Any],
    given: Collection[str],
    trust_remote_code: bool = False,
) -> PretrainedConfig:
    """
    The config of the model to pretrain, from the flags (see the module docstring); `shape` holds the BudgetBert
    shape flags' values and `given` the flags given on the command line. Its vocabulary and special-token ids are
    still the config's own: `config_for_tokenizer` sets the tokenizer's when the model is built.

    Raises:
        UsageError: every problem at once, each naming its flags: a shape flag given where it cannot act, overrides of
            a checkpoint, an unknown override key or a bad value, a config that cannot be read.
    """
    sources = [f"{flag} {value}" for flag, value in (("--model_name_or_path", model_name_or_path),
                                                      ("--config_name", config_name)) if value]
    fresh_budget_bert = model_type in BUDGET_BERT_TYPES and not sources
    problems = []
    if len(sources) > 1:
        problems.append(f"{sources[0]} and {sources[1]} both name the model's config: give one of the flags")
    if "model_type" in given and sources:
        problems.append(f"--model_type {model_type} and {sources[0]} both choose the model: give one")
    if not fresh_budget_bert:
        owner = sources[0] if sources else f"--model_type {model_type}"
        problems += [f"--{flag} shapes a fresh BudgetBert and does not apply to {owner}: drop it, or set "
                     f"{flag} in --config_overrides" for flag in BUDGET_BERT_SHAPE_FLAGS if flag in given]
    if config_overrides and model_name_or_path:
        problems.append("--config_overrides and --model_name_or_path: a checkpoint keeps its config (as in "
                        "HuggingFace's run_mlm.py); use --config_name to start a new model from its config")
    if problems:
        raise UsageError(problems)

    if fresh_budget_bert:
        overrides = parse_config_overrides(config_overrides, BudgetBertConfig()) if config_overrides else {}
        values = {**shape, **overrides}
        if values.get("intermediate_size") is None:
            values["intermediate_size"] = default_intermediate_size(values["hidden_size"], values["mlp_type"])
        try:
            return BudgetBertConfig(**values)
        except ValueError as error:
            raise UsageError(_config_problems(error, overrides)) from None
    source = sources[0] if sources else f"--model_type {model_type}"
    try:
        if sources:
            path = config_name or model_name_or_path
            template = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
        else:
            template = AutoConfig.for_model(model_type)
    except (OSError, ValueError, StrictDataclassError) as error:
        raise UsageError(f"{source}: cannot be read as a model config ({_reason(error)})") from None
    overrides = parse_config_overrides(config_overrides, template) if config_overrides else {}
    try:
        if sources:
            return type(template).from_dict({**template.to_dict(), **overrides})
        # A default config derives some fields from others (ModernBERT's layer_types from num_hidden_layers).
        return AutoConfig.for_model(model_type, **overrides)
    except (ValueError, TypeError, StrictDataclassError) as error:
        raise UsageError(f"{source} with --config_overrides {config_overrides}: {_reason(error)}") from None


def _reason(error: Exception) -> str:
    # Strict config classes wrap the validator's message in lines of context: the last line is the reason.
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__


def _config_problems(error: ValueError, overrides: dict[str, Any]) -> list[str]:
    """`BudgetBertConfig`'s problems, each naming the flag that set the field (`--num_attention_heads`, ...)."""

    def flag(match: re.Match) -> str:
        name = match.group(1)
        if name in overrides:
            return f"--config_overrides {name}={overrides[name]}"
        return f"--{name}" if name in BUDGET_BERT_SHAPE_FLAGS else f"`{name}`"

    lines = [line.strip().removeprefix("- ") for line in str(error).splitlines()[1:]] or [str(error)]
    return [re.sub(r"`(\w+)`", flag, line) for line in lines if line]


def meta_model(config: PretrainedConfig, source: str, trust_remote_code: bool = False) -> PreTrainedModel:
    """
    The model of `config` on the meta device (no memory, no weights): proof that it builds, and its size.
    `UsageError` naming `source` (the flag that chose the model) when it does not build.
    """
    try:
        with torch.device("meta"):
            return AutoModelForMaskedLM.from_config(config, trust_remote_code=trust_remote_code)
    except (ValueError, TypeError, AttributeError, AssertionError, StrictDataclassError) as error:
        raise UsageError(f"{source}: the model cannot be built from this config ({_reason(error)})") from None


def config_for_tokenizer(config: PretrainedConfig, tokenizer: PreTrainedTokenizerBase) -> PretrainedConfig:
    """
    A copy of `config` with the vocabulary size and special-token ids of `tokenizer` (BERT's [PAD], [CLS], [SEP];
    ModernBERT's bos and eos are [CLS] and [SEP]), for the fields the config has.
    """
    values = config.to_dict()
    ids = {name: getattr(tokenizer, _TOKEN_FOR_ID.get(name, name)) for name in _SPECIAL_TOKEN_IDS}
    ids = {name: value for name, value in ids.items()
           if value is not None and (name in values or name == "pad_token_id")}
    return type(config).from_dict({**values, "vocab_size": len(tokenizer), **ids})
