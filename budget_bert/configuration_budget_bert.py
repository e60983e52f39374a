"""BudgetBert model configuration."""

from huggingface_hub.dataclasses import strict
from transformers import PretrainedConfig
from transformers.activations import ACT2FN


ENCODER_LN_MODES = ("pre-ln", "post-ln")
LAYER_NORM_TYPES = ("layernorm", "rmsnorm")
MLP_TYPES = ("mlp", "glu")
POSITION_EMBEDDING_TYPES = ("absolute", "rope")
CLASSIFIER_HEADS = ("pooler", "lm_head")
CLASSIFIER_POOLINGS = ("cls", "mean")

# Written into every saved config so that a snapshot folder (which always carries both code files, see
# `register_for_auto_class` in `budget_bert/__init__.py`) loads through any of these Auto classes with
# `trust_remote_code=True`, whichever head saved it. The model's own save only records its own class.
DEFAULT_AUTO_MAP = {
    "AutoConfig": "configuration_budget_bert.BudgetBertConfig",
    "AutoModel": "modeling_budget_bert.BudgetBertModel",
    "AutoModelForMaskedLM": "modeling_budget_bert.BudgetBertForMaskedLM",
    "AutoModelForSequenceClassification": "modeling_budget_bert.BudgetBertForSequenceClassification",
}


@strict
class BudgetBertConfig(PretrainedConfig):
    r"""
    Configuration of a BudgetBert encoder: a BERT encoder (`BertConfig` field names and defaults, bert-base sizes)
    with the architecture switches of academic-budget-bert and of recent encoders (ModernBERT's gated MLP, rotary
    positions and bias-free layers; query/key normalisation; scaled residual initialisation). Every switch defaults
    to BERT's behaviour.

    Args:
        vocab_size (`int`, defaults to 30522): number of real tokens in the vocabulary. The embedding matrix has
            `padded_vocab_size` rows; the extra rows are never predicted.
        hidden_size (`int`, defaults to 768): width of the encoder.
        num_hidden_layers (`int`, defaults to 12): number of encoder layers.
        num_attention_heads (`int`, defaults to 12): attention heads per layer; must divide `hidden_size`.
        intermediate_size (`int`, defaults to 3072): width of the feed-forward block; with `mlp_type="glu"`, the
            width of each of its two halves (ModernBERT's convention), so a gated block of width 2I/3 has the
            parameters and FLOPs of an ungated one of width I (bert-base's 3072 -> 2048).
        hidden_act (`str`, defaults to `"gelu"`): activation of the feed-forward block and the MLM head, a key of
            `transformers.activations.ACT2FN`. With `mlp_type="glu"`, `"gelu"` makes GeGLU and `"silu"` SwiGLU.
        mlp_type (`str`, defaults to `"mlp"`): `"mlp"` is BERT's `Linear -> act -> Linear`; `"glu"` is a gated
            linear unit: one projection to `2 * intermediate_size`, split in halves `(input, gate)`, then
            `act(input) * gate` goes through the output projection.
        hidden_dropout_prob (`float`, defaults to 0.1): dropout on embeddings and on every residual branch.
        attention_probs_dropout_prob (`float`, defaults to 0.1): dropout on the attention probabilities.
        max_position_embeddings (`int`, defaults to 512): longest sequence the learned positions cover (with
            rotary positions nothing is learned per position; the tokenizer's length is still capped by it).
        position_embedding_type (`str`, defaults to `"absolute"`): `"absolute"` adds BERT's learned position
            table to the embeddings; `"rope"` has no position table and rotates each head's queries and keys by
            their position (rotary embeddings, RoFormer; adjacent head dimensions form the rotated pairs), which
            needs an even head size.
        rope_theta (`float`, defaults to 10000.0): base of the rotary frequencies; read only with
            `position_embedding_type="rope"`.
        type_vocab_size (`int`, defaults to 2): number of token types (segments).
        initializer_range (`float`, defaults to 0.02): standard deviation of the normal weight initialisation.
        layer_norm_eps (`float`, defaults to 1e-12): epsilon of every normalisation layer.
        pad_token_id (`int`, defaults to 0): id of the padding token (its embedding gets no gradient).
        classifier_dropout (`float`, *optional*): dropout before the sequence classifier; `hidden_dropout_prob`
            when unset.
        classifier_head (`str`, defaults to `"pooler"`): the layer between the encoder and the sequence
            classifier. `"pooler"` is BERT's pooler (dense + tanh), which MLM pretraining never trains;
            `"lm_head"` is the MLM head's transform (dense + activation + norm, ModernBERT's classifier head),
            which `from_pretrained` of a masked-LM checkpoint starts from its pretrained weights.
        classifier_pooling (`str`, defaults to `"cls"`): what the classifier head reads: `"cls"` the first token,
            `"mean"` the mean over the positions that `attention_mask` keeps.
        encoder_ln_mode (`str`, defaults to `"pre-ln"`): `"pre-ln"` normalises the input of each attention and
            feed-forward block and the encoder output; `"post-ln"` normalises after each residual sum, exactly BERT.
        layer_norm_type (`str`, defaults to `"layernorm"`): `"layernorm"` or `"rmsnorm"`, for every norm layer.
        layernorm_embedding (`bool`, defaults to `True`): normalise the summed embeddings (BERT does).
        linear_bias (`bool`, defaults to `True`): bias on every linear layer of the encoder (QKV, attention output,
            feed-forward), the MLM head's dense layer and the pooler; ModernBERT has none. The classifier of
            `BudgetBertForSequenceClassification` always has one.
        norm_bias (`bool`, defaults to `True`): bias of the LayerNorm layers (RMSNorm never has one).
        decoder_bias (`bool`, defaults to `True`): bias of the MLM decoder (the vocabulary projection).
        qk_norm (`bool`, defaults to `False`): RMS-normalise each head's queries and keys over the head size, with
            learned weights (one for queries, one for keys, shared by the heads), before attention (and before the
            rotation, with rotary positions).
        scale_residual_init (`bool`, defaults to `False`): initialise the output projections of attention and of
            the feed-forward block (the layers that write into the residual stream) with standard deviation
            `initializer_range / sqrt(2 * num_hidden_layers)` (GPT-2, Megatron, ModernBERT) instead of
            `initializer_range`.
        scale_head_init (`bool`, defaults to `False`): initialise the dense layer of the MLM head's transform (also
            the classifier's head with `classifier_head="lm_head"`) with that same smaller standard deviation, as
            ModernBERT does; with `scale_residual_init` it is ModernBERT's scaling of the output layers.
        sparse_mask_prediction (`bool`, defaults to `True`): when labels are given, run the MLM head only on the
            positions whose label is not -100.
        pad_vocab_size_multiple (`int`, defaults to 8): the embedding matrix gets `vocab_size` rounded up to a
            multiple of this many rows, for aligned matrix products.
        tie_word_embeddings (`bool`, defaults to `True`): share the MLM decoder weight with the word embeddings.
        auto_map (`dict`, *optional*): Auto class to code mapping for `trust_remote_code`; all four BudgetBert
            classes by default.

    Example:

    ```python
    >>> from budget_bert import BudgetBertConfig, BudgetBertForMaskedLM
    >>> config = BudgetBertConfig(num_hidden_layers=4, hidden_size=256, num_attention_heads=4, intermediate_size=1024)
    >>> model = BudgetBertForMaskedLM(config)
    ```
    """

    model_type = "budget-bert"

    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    mlp_type: str = "mlp"
    hidden_dropout_prob: float | int = 0.1
    attention_probs_dropout_prob: float | int = 0.1
    max_position_embeddings: int = 512
    position_embedding_type: str = "absolute"
    rope_theta: float | int = 10000.0
    type_vocab_size: int = 2
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-12
    pad_token_id: int | None = 0
    classifier_dropout: float | int | None = None
    classifier_head: str = "pooler"
    classifier_pooling: str = "cls"
    encoder_ln_mode: str = "pre-ln"
    layer_norm_type: str = "layernorm"
    layernorm_embedding: bool = True
    linear_bias: bool = True
    norm_bias: bool = True
    decoder_bias: bool = True
    qk_norm: bool = False
    scale_residual_init: bool = False
    scale_head_init: bool = False
    sparse_mask_prediction: bool = True
    pad_vocab_size_multiple: int = 8
    tie_word_embeddings: bool = True
    auto_map: dict[str, str] | None = None

    def __post_init__(self, **kwargs):
        problems = []
        for name in (
            "vocab_size",
            "hidden_size",
            "num_hidden_layers",
            "num_attention_heads",
            "intermediate_size",
            "max_position_embeddings",
            "type_vocab_size",
            "pad_vocab_size_multiple",
        ):
            if getattr(self, name) <= 0:
                problems.append(f"`{name}` must be a positive integer, got {getattr(self, name)}.")
        if self.hidden_size > 0 and self.num_attention_heads > 0 and self.hidden_size % self.num_attention_heads:
            problems.append(
                f"`hidden_size` ({self.hidden_size}) must be divisible by `num_attention_heads` "
                f"({self.num_attention_heads}); pick a head count that divides it."
            )
        if self.encoder_ln_mode not in ENCODER_LN_MODES:
            problems.append(f"`encoder_ln_mode` must be one of {ENCODER_LN_MODES}, got {self.encoder_ln_mode!r}.")
        if self.layer_norm_type not in LAYER_NORM_TYPES:
            problems.append(f"`layer_norm_type` must be one of {LAYER_NORM_TYPES}, got {self.layer_norm_type!r}.")
        if self.mlp_type not in MLP_TYPES:
            problems.append(f"`mlp_type` must be one of {MLP_TYPES}, got {self.mlp_type!r}.")
        if self.position_embedding_type not in POSITION_EMBEDDING_TYPES:
            problems.append(
                f"`position_embedding_type` must be one of {POSITION_EMBEDDING_TYPES}, "
                f"got {self.position_embedding_type!r}."
            )
        elif self.position_embedding_type == "rope" and self.hidden_size > 0 and self.num_attention_heads > 0:
            head_size = self.hidden_size // self.num_attention_heads
            if head_size % 2:
                problems.append(
                    f"`position_embedding_type=\"rope\"` rotates pairs of head dimensions, so the head size "
                    f"(`hidden_size / num_attention_heads` = {head_size}) must be even; change either."
                )
        if self.classifier_head not in CLASSIFIER_HEADS:
            problems.append(f"`classifier_head` must be one of {CLASSIFIER_HEADS}, got {self.classifier_head!r}.")
        if self.classifier_pooling not in CLASSIFIER_POOLINGS:
            problems.append(
                f"`classifier_pooling` must be one of {CLASSIFIER_POOLINGS}, got {self.classifier_pooling!r}."
            )
        if self.rope_theta <= 0:
            problems.append(f"`rope_theta` must be positive, got {self.rope_theta}.")
        if self.hidden_act not in ACT2FN:
            problems.append(f"`hidden_act` must be a key of transformers' ACT2FN, got {self.hidden_act!r}.")
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob", "classifier_dropout"):
            value = getattr(self, name)
            if value is not None and not 0.0 <= value < 1.0:
                problems.append(f"`{name}` must be in [0, 1), got {value}.")
        if self.layer_norm_eps <= 0:
            problems.append(f"`layer_norm_eps` must be positive, got {self.layer_norm_eps}.")
        if problems:
            raise ValueError("Invalid BudgetBertConfig:\n  - " + "\n  - ".join(problems))
        if self.auto_map is None:
            self.auto_map = dict(DEFAULT_AUTO_MAP)
        super().__post_init__(**kwargs)

    @property
    def padded_vocab_size(self) -> int:
        """Rows of the word embedding matrix: `vocab_size` rounded up to a multiple of `pad_vocab_size_multiple`."""
        multiple = self.pad_vocab_size_multiple
        return -(-self.vocab_size // multiple) * multiple


__all__ = ["BudgetBertConfig"]
