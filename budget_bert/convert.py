"""Load the weights of a stock `transformers` BERT into a post-LN BudgetBert of the same shape.

Post-LN BudgetBert is BERT's architecture with a different parameter layout (one fused QKV projection, a
vocabulary padded to `pad_vocab_size_multiple` rows, shorter names); this module maps one onto the other.
"""

import re

import torch
from transformers import BertConfig
from transformers.utils import logging

from budget_bert.configuration_budget_bert import BudgetBertConfig
from budget_bert.modeling_budget_bert import BudgetBertModel, BudgetBertPreTrainedModel


logger = logging.get_logger(__name__)


# BERT parameter name (without the `bert.` prefix) -> BudgetBert name, as `re.sub` pattern and replacement.
_RENAMES = {
    r"embeddings\.(word_embeddings|position_embeddings|token_type_embeddings)\.weight": r"embeddings.\1.weight",
    r"embeddings\.LayerNorm\.(weight|bias)": r"embeddings.norm.\1",
    r"encoder\.layer\.(\d+)\.attention\.output\.dense\.(weight|bias)": r"encoder.layer.\1.attention.dense.\2",
    r"encoder\.layer\.(\d+)\.attention\.output\.LayerNorm\.(weight|bias)": r"encoder.layer.\1.attention_norm.\2",
    r"encoder\.layer\.(\d+)\.intermediate\.dense\.(weight|bias)": r"encoder.layer.\1.intermediate.\2",
    r"encoder\.layer\.(\d+)\.output\.dense\.(weight|bias)": r"encoder.layer.\1.output.\2",
    r"encoder\.layer\.(\d+)\.output\.LayerNorm\.(weight|bias)": r"encoder.layer.\1.ffn_norm.\2",
    r"pooler\.dense\.(weight|bias)": r"pooler.dense.\1",
}
_HEAD_RENAMES = {
    r"cls\.predictions\.transform\.dense\.(weight|bias)": r"lm_head.dense.\1",
    r"cls\.predictions\.transform\.LayerNorm\.(weight|bias)": r"lm_head.norm.\1",
    r"cls\.predictions\.(?:decoder\.)?bias": r"lm_head.decoder.bias",
    r"classifier\.(weight|bias)": r"classifier.\1",
}
# The MLM decoder weight is the word embedding matrix (tied), and the buffers are rebuilt by the model.
_SKIPPED = re.compile(r"cls\.predictions\.decoder\.weight|.*(position_ids|token_type_ids)")
_QKV = re.compile(r"encoder\.layer\.(\d+)\.attention\.self\.(query|key|value)\.(weight|bias)")
# The BudgetBert switches under which its architecture is BERT's: every other value adds, drops or reshapes weights.
BERT_ARCHITECTURE = {
    "encoder_ln_mode": "post-ln",
    "layer_norm_type": "layernorm",
    "layernorm_embedding": True,
    "mlp_type": "mlp",
    "position_embedding_type": "absolute",
    "linear_bias": True,
    "norm_bias": True,
    "decoder_bias": True,
    "qk_norm": False,
    "classifier_head": "pooler",
    "classifier_pooling": "cls",
}


def budget_bert_config_from_bert(bert_config: BertConfig, **overrides) -> BudgetBertConfig:
    """A `BudgetBertConfig` with the shape and hyperparameters of `bert_config` and BERT's architecture
    (`BERT_ARCHITECTURE`, BERT's plain initialisation); `overrides` win."""
    fields = (
        "vocab_size",
        "hidden_size",
        "num_hidden_layers",
        "num_attention_heads",
        "intermediate_size",
        "hidden_act",
        "hidden_dropout_prob",
        "attention_probs_dropout_prob",
        "max_position_embeddings",
        "type_vocab_size",
        "initializer_range",
        "layer_norm_eps",
        "pad_token_id",
        "classifier_dropout",
    )
    kwargs = {name: getattr(bert_config, name) for name in fields}
    kwargs.update(BERT_ARCHITECTURE, scale_residual_init=False, scale_head_init=False)
    kwargs.update(id2label=bert_config.id2label, label2id=bert_config.label2id)
    kwargs.update(overrides)
    return BudgetBertConfig(**kwargs)


def convert_bert_state_dict(
    bert_state_dict: dict[str, torch.Tensor], config: BudgetBertConfig
) -> dict[str, torch.Tensor]:
    """Map a state dict of `BertModel`, `BertForMaskedLM` or `BertForSequenceClassification` to BudgetBert names.

    Encoder keys come out with the `budget_bert.` prefix of the head models. Query, key and value are stacked
    into the fused QKV projection; the word embeddings and the MLM bias are padded with zeros to
    `config.padded_vocab_size` rows. Raises `ValueError` for a key it does not know.
    """
    converted, qkv_parts, unknown = {}, {}, []
    for name, tensor in bert_state_dict.items():
        name = name.removeprefix("bert.")
        if _SKIPPED.fullmatch(name):
            continue
        if match := _QKV.fullmatch(name):
            layer, part, kind = match.groups()
            qkv_parts.setdefault((layer, kind), {})[part] = tensor
            continue
        for table, prefix in ((_RENAMES, "budget_bert."), (_HEAD_RENAMES, "")):
            new_name = next((re.sub(p, r, name) for p, r in table.items() if re.fullmatch(p, name)), None)
            if new_name is not None:
                converted[prefix + new_name] = tensor
                break
        else:
            unknown.append(name)
    if unknown:
        raise ValueError(f"Unknown BERT parameters, not converted: {', '.join(unknown)}.")
    for (layer, kind), parts in qkv_parts.items():
        stacked = torch.cat([parts["query"], parts["key"], parts["value"]])  # (3H, H) or (3H,)
        converted[f"budget_bert.encoder.layer.{layer}.attention.qkv.{kind}"] = stacked
    for name in ("budget_bert.embeddings.word_embeddings.weight", "lm_head.decoder.bias"):
        if name in converted:
            tensor = converted[name]
            padding = tensor.new_zeros((config.padded_vocab_size - tensor.shape[0], *tensor.shape[1:]))
            converted[name] = torch.cat([tensor, padding])
    return converted


def load_bert_weights(model: BudgetBertPreTrainedModel, bert_model: torch.nn.Module) -> None:
    """Copy the weights of a stock BERT (`BertModel`, `BertForMaskedLM`, `BertForSequenceClassification`) into
    `model`, a BudgetBert of the same shape with BERT's architecture (`BERT_ARCHITECTURE`; build its config with
    `budget_bert_config_from_bert`).

    Every encoder parameter must receive a value, else `ValueError` names the missing ones; head parameters the
    BERT model does not have (a fresh classifier, say) keep their initialisation and are logged.
    """
    wrong = [f"{name}={getattr(model.config, name)!r}" for name, value in BERT_ARCHITECTURE.items()
             if getattr(model.config, name) != value]
    if wrong:
        raise ValueError(f"BERT weights need a config with {BERT_ARCHITECTURE}; this one has {', '.join(wrong)}.")
    state_dict = convert_bert_state_dict(bert_model.state_dict(), model.config)
    prefix = "" if isinstance(model, BudgetBertModel) else "budget_bert."
    if not prefix:
        state_dict = {k.removeprefix("budget_bert."): v for k, v in state_dict.items() if k.startswith("budget_bert.")}
    missing, _ = model.load_state_dict(state_dict, strict=False)
    missing = [name for name in missing if name not in model.all_tied_weights_keys]
    missing_encoder = [name for name in missing if name.startswith(prefix)]
    if missing_encoder:
        raise ValueError(f"The BERT model has no weights for: {', '.join(missing_encoder)}.")
    if missing:
        logger.warning(f"Not in the BERT model, left as initialised: {', '.join(missing)}.")
