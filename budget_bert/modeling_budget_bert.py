"""PyTorch BudgetBert: a BERT encoder built to pretrain fast under a wall-clock budget.

Post-LN BudgetBert is exactly BERT (see `budget_bert.convert.load_bert_weights`); pre-LN (the default) moves every
norm in front of its block and adds a final norm. Speed comes from a fused QKV projection, PyTorch's
`scaled_dot_product_attention`, a sparse MLM head that only decodes the positions that carry a label, and on the
CPU a cheaper dropout mask. Config switches add the pieces of recent encoders (ModernBERT): a gated MLP, rotary
positions, bias-free layers, query/key normalisation and a scaled residual initialisation.

The file reads top-down: norm and dropout helpers, embeddings, rotary positions, attention, layer, encoder,
`PreTrainedModel`, heads. Shape comments use B batch, T sequence length, H hidden size, nh heads, hs head size,
I intermediate size, V vocabulary, Vp padded vocabulary, N labelled (masked) tokens.
"""

import math

import torch
from torch import nn
from torch.nn import functional as F
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutputWithPooling, MaskedLMOutput, SequenceClassifierOutput
from transformers.modeling_utils import PreTrainedModel

from .configuration_budget_bert import BudgetBertConfig


IGNORE_INDEX = -100


def make_norm(config: BudgetBertConfig) -> nn.Module:
    """The normalisation layer `config.layer_norm_type` names, over the hidden size."""
    if config.layer_norm_type == "rmsnorm":
        return nn.RMSNorm(config.hidden_size, eps=config.layer_norm_eps)
    return nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps, bias=config.norm_bias)


def dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """`F.dropout`, with a cheaper random mask on the CPU.

    PyTorch draws a CPU dropout mask one Bernoulli sample per element, on one thread: about a seventh of a bert-base
    training step. Here each 64-bit random draw gives four 15-bit uniforms, each compared with p (so p is rounded
    to a multiple of 1/32768), about 3.5x faster. Elsewhere (CUDA's fused kernels are fast) and under
    `torch.compile` (the in-place draw would break the graph; inductor generates its own fused mask) this is
    `F.dropout`.
    """
    if not training or p == 0.0 or p >= 1.0 or x.device.type != "cpu" or torch.compiler.is_compiling():
        return F.dropout(x, p, training)
    count = x.numel()
    draws = torch.empty((count + 3) // 4, dtype=torch.int64).random_()  # uniform over [0, 2**63)
    uniforms = draws.view(torch.int16)[:count].view(x.shape).bitwise_and(2**15 - 1)  # each over [0, 2**15)
    keep = (uniforms >= round(p * 2**15)).to(x.dtype).mul_(1.0 / (1.0 - p))
    return x * keep


class Dropout(nn.Dropout):
    """`nn.Dropout` through `dropout` (the cheaper CPU mask)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dropout(x, self.p, self.training)


class BudgetBertEmbeddings(nn.Module):
    """Sum of word, position (absolute positions only) and token type embeddings, optionally normalised, then
    dropout. With rotary positions there is no position table: `position_ids` are read by the attention instead.
    """

    def __init__(self, config: BudgetBertConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(
            config.padded_vocab_size, config.hidden_size, padding_idx=config.pad_token_id
        )
        self.position_embeddings = (
            nn.Embedding(config.max_position_embeddings, config.hidden_size)
            if config.position_embedding_type == "absolute"
            else None
        )
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.norm = make_norm(config) if config.layernorm_embedding else nn.Identity()
        self.dropout = Dropout(config.hidden_dropout_prob)

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if inputs_embeds is None:
            inputs_embeds = self.word_embeddings(input_ids)  # (B, T, H)
        seq_length = inputs_embeds.shape[1]
        # Default positions and token types are the leading rows: slicing the weight skips an index lookup.
        if token_type_ids is None:
            token_type = self.token_type_embeddings.weight[0]  # (H,)
        else:
            token_type = self.token_type_embeddings(token_type_ids)  # (B, T, H)
        embeddings = inputs_embeds + token_type  # (B, T, H)
        if self.position_embeddings is not None:
            if position_ids is None:
                position = self.position_embeddings.weight[:seq_length]  # (T, H)
            else:
                position = self.position_embeddings(position_ids)  # (B, T, H)
            embeddings = embeddings + position  # BERT's summation order
        return self.dropout(self.norm(embeddings))


class BudgetBertRotaryEmbedding(nn.Module):
    """The rotations of rotary position embeddings (RoFormer), computed once per forward for all layers.

    Head dimensions 2i and 2i + 1 form a pair, rotated by the angle position * theta^(-2i/hs): RoFormer's and Meta
    Llama's interleaved layout. (HF's `rotate_half` layout pairs i with i + hs/2 instead: the same up to a fixed
    permutation of the head dimensions, which the query and key projections absorb; adjacent pairs let
    `apply_rotary` read a pair as a complex number.)
    The frequencies are recomputed each call rather than kept in a buffer: a few ops on hs/2 numbers, and nothing
    to move, initialise or load.
    """

    def __init__(self, config: BudgetBertConfig):
        super().__init__()
        self.head_size = config.hidden_size // config.num_attention_heads
        self.theta = float(config.rope_theta)

    def forward(
        self, seq_length: int, position_ids: torch.Tensor | None, device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The cosines and sines of the angles in float32, each (T, 1, 1, hs/2), or (B, T, 1, 1, hs/2) for explicit
        `position_ids` (B, T): shaped to broadcast over the (B, T, 2, nh, hs/2) pairs of the queries and keys."""
        exponents = torch.arange(0, self.head_size, 2, device=device, dtype=torch.float32) / self.head_size
        inverse_frequencies = self.theta**-exponents  # (hs/2,)
        if position_ids is None:
            positions = torch.arange(seq_length, device=device, dtype=torch.float32)  # (T,)
        else:
            positions = position_ids.float()  # (B, T)
        angles = (positions[..., None] * inverse_frequencies)[..., None, None, :]  # (..., T, 1, 1, hs/2)
        return angles.cos(), angles.sin()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate each pair (2i, 2i + 1) of the last dimension of `x` (..., hs) by the angles whose cosines and sines
    (..., hs/2) are given; computed in float32, returned in the dtype of `x`.

    In eager mode a pair is a complex number and the rotation one complex product, forward and backward: on the
    CPU about a quarter of the cost of HF's rotate_half ops (slices, negation, concatenation, each a pass over q
    and k). Inductor generates no code for complex numbers (it would fall back to eager kernels and fuse nothing
    around them), so under `torch.compile` the same rotation is written in real arithmetic, which it fuses.
    """
    pairs = x.float().unflatten(-1, (-1, 2))  # (..., hs/2, 2)
    if torch.compiler.is_compiling():
        even, odd = pairs.unbind(-1)
        rotated = torch.stack((even * cos - odd * sin, even * sin + odd * cos), dim=-1)
    else:
        rotated = torch.view_as_real(torch.view_as_complex(pairs) * torch.complex(cos, sin))
    return rotated.flatten(-2).type_as(x)  # (..., hs)


class BudgetBertQKNorm(nn.Module):
    """RMSNorm of each head's query and key over the head size, with one learned weight for queries and one for
    keys (shared by the heads); applied to both at once, on the stacked (B, T, 2, nh, hs) tensor."""

    def __init__(self, config: BudgetBertConfig):
        super().__init__()
        self.eps = config.layer_norm_eps
        self.weight = nn.Parameter(torch.ones(2, 1, config.hidden_size // config.num_attention_heads))

    def forward(self, query_key: torch.Tensor) -> torch.Tensor:
        # F.rms_norm's mean of squares, written as one float32 norm reduction: on the CPU, F.rms_norm is composite
        # (a squared copy of the tensor, then a mean), and under bf16 autocast it would also sum in bf16.
        norm = torch.linalg.vector_norm(query_key, dim=-1, keepdim=True, dtype=torch.float32)  # (B, T, 2, nh, 1)
        inverse_rms = (norm.square() / query_key.shape[-1] + self.eps).rsqrt().to(query_key.dtype)
        return query_key * inverse_rms * self.weight.to(query_key.dtype)  # (B, T, 2, nh, hs)


def attention_bias(attention_mask: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    """Turn a (B, T) mask of 1 (token) / 0 (padding) into an additive (B, 1, 1, T) bias, or None if nothing is masked.

    The bias is the dtype's finite minimum, not -inf: a row whose keys are all padding then softmaxes to uniform
    weights instead of NaN. Without padding no bias is passed, which lets SDPA pick its fastest kernel; that check
    reads the mask, so it is skipped while compiling.
    """
    if attention_mask is None:
        return None
    if not torch.compiler.is_compiling() and bool(attention_mask.all()):
        return None
    keep = attention_mask[:, None, None, :].to(dtype)  # (B, 1, 1, T)
    return (1.0 - keep) * torch.finfo(dtype).min


def eager_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    bias: torch.Tensor | None,
    dropout_p: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference attention that materialises the probabilities: returns (context, probabilities)."""
    scores = query @ key.transpose(-1, -2) * query.shape[-1] ** -0.5  # (B, nh, T, T)
    if bias is not None:
        scores = scores + bias
    probs = scores.softmax(dim=-1)  # (B, nh, T, T)
    context = dropout(probs, dropout_p, training=dropout_p > 0) @ value  # (B, nh, T, hs)
    return context, probs


class ResidualOutputLinear(nn.Linear):
    """A linear layer whose output is added to the residual stream (attention and feed-forward output).

    Its own class so that `_init_weights` can find it: HF does not pass modules without parameters of their own
    (a layer, an attention block) to `_init_weights` in remote code, so the init is decided on the linear itself.
    """


class HeadTransformLinear(nn.Linear):
    """The dense layer of the MLM head's transform, its own class for `_init_weights` (as `ResidualOutputLinear`)."""


class BudgetBertSelfAttention(nn.Module):
    """Multi-head self-attention with one fused QKV projection and an output projection, optionally normalising
    and rotating (rotary positions) the queries and keys.

    Runs through `torch.nn.functional.scaled_dot_product_attention`, or through `eager_attention` when the
    probabilities are requested or the model was loaded with `attn_implementation="eager"`.
    """

    def __init__(self, config: BudgetBertConfig):
        super().__init__()
        self.config = config
        self.num_heads = config.num_attention_heads
        self.head_size = config.hidden_size // config.num_attention_heads
        self.dropout_prob = config.attention_probs_dropout_prob
        self.qkv = nn.Linear(config.hidden_size, 3 * config.hidden_size, bias=config.linear_bias)
        self.qk_norm = BudgetBertQKNorm(config) if config.qk_norm else None
        self.dense = ResidualOutputLinear(config.hidden_size, config.hidden_size, bias=config.linear_bias)

    def forward(
        self,
        hidden_states: torch.Tensor,
        bias: torch.Tensor | None = None,
        output_attentions: bool = False,
        rotary: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """`rotary` is the (cos, sin) of `BudgetBertRotaryEmbedding`, or None for absolute positions."""
        batch_size, seq_length, hidden_size = hidden_states.shape
        qkv = self.qkv(hidden_states).view(batch_size, seq_length, 3, self.num_heads, self.head_size)
        if self.qk_norm is None and rotary is None:
            query, key, value = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # 3 x (B, nh, T, hs)
        else:
            # Queries and keys go through the norm and the rotation together: one pass over both, not two. `split`,
            # not indexing: the backward of an index zero-fills a gradient of the whole qkv for each part.
            query_key, value = qkv.split([2, 1], dim=2)  # (B, T, 2, nh, hs), (B, T, 1, nh, hs)
            if self.qk_norm is not None:
                query_key = self.qk_norm(query_key)
            if rotary is not None:
                query_key = apply_rotary(query_key, *rotary)
            query, key = query_key.permute(2, 0, 3, 1, 4).unbind(0)  # 2 x (B, nh, T, hs)
            value = value.squeeze(2).transpose(1, 2)  # (B, nh, T, hs)
        dropout_p = self.dropout_prob if self.training else 0.0
        probs = None
        # SDPA on the CPU draws its dropout mask like F.dropout; the eager path uses the cheaper one.
        cpu_dropout = dropout_p > 0 and hidden_states.device.type == "cpu"
        if output_attentions or cpu_dropout or self.config._attn_implementation == "eager":
            context, probs = eager_attention(query, key, value, bias, dropout_p)
        else:
            context = F.scaled_dot_product_attention(query, key, value, attn_mask=bias, dropout_p=dropout_p)
        context = context.transpose(1, 2).reshape(batch_size, seq_length, hidden_size)  # (B, T, H)
        return self.dense(context), probs


class BudgetBertLayer(GradientCheckpointingLayer):
    """One encoder layer: self-attention then feed-forward, each a residual branch with dropout.

    Pre-LN: `x + f(norm(x))`. Post-LN (BERT): `norm(x + f(x))`. The feed-forward block is BERT's MLP or a gated
    linear unit (`config.mlp_type`); the gated one's `intermediate` projects to both halves at once.
    """

    def __init__(self, config: BudgetBertConfig):
        super().__init__()
        self.pre_ln = config.encoder_ln_mode == "pre-ln"
        self.gated = config.mlp_type == "glu"
        self.attention = BudgetBertSelfAttention(config)
        self.attention_norm = make_norm(config)
        self.intermediate = nn.Linear(
            config.hidden_size, (2 if self.gated else 1) * config.intermediate_size, bias=config.linear_bias
        )
        self.activation = ACT2FN[config.hidden_act]
        self.output = ResidualOutputLinear(config.intermediate_size, config.hidden_size, bias=config.linear_bias)
        self.ffn_norm = make_norm(config)
        self.dropout = Dropout(config.hidden_dropout_prob)

    def feed_forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """The position-wise feed-forward block, (B, T, H) -> (B, T, H)."""
        intermediate = self.intermediate(hidden_states)  # (B, T, I), or (B, T, 2I) gated
        if self.gated:
            intermediate, gate = intermediate.chunk(2, dim=-1)  # 2 x (B, T, I)
            return self.output(self.activation(intermediate) * gate)
        return self.output(self.activation(intermediate))

    def forward(
        self,
        hidden_states: torch.Tensor,
        bias: torch.Tensor | None = None,
        output_attentions: bool = False,
        rotary: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.pre_ln:
            attended, probs = self.attention(self.attention_norm(hidden_states), bias, output_attentions, rotary)
            hidden_states = hidden_states + self.dropout(attended)
            hidden_states = hidden_states + self.dropout(self.feed_forward(self.ffn_norm(hidden_states)))
        else:
            attended, probs = self.attention(hidden_states, bias, output_attentions, rotary)
            hidden_states = self.attention_norm(hidden_states + self.dropout(attended))
            hidden_states = self.ffn_norm(hidden_states + self.dropout(self.feed_forward(hidden_states)))
        return hidden_states, probs  # (B, T, H), (B, nh, T, T) or None


class BudgetBertEncoder(nn.Module):
    """The stack of layers, plus the final norm that pre-LN needs (post-LN layers already end normalised)."""

    def __init__(self, config: BudgetBertConfig):
        super().__init__()
        self.layer = nn.ModuleList([BudgetBertLayer(config) for _ in range(config.num_hidden_layers)])
        self.final_norm = make_norm(config) if config.encoder_ln_mode == "pre-ln" else nn.Identity()

    def forward(
        self,
        hidden_states: torch.Tensor,
        bias: torch.Tensor | None = None,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
        rotary: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...] | None, tuple[torch.Tensor, ...] | None]:
        """Returns (last hidden state, hidden states, attentions).

        The hidden states are the embeddings, then each layer's output; the last one is the final (normalised)
        output, as in HF's pre-norm models.
        """
        all_hidden_states = () if output_hidden_states else None
        all_attentions = () if output_attentions else None
        for layer in self.layer:
            if output_hidden_states:
                all_hidden_states += (hidden_states,)
            hidden_states, probs = layer(
                hidden_states, bias=bias, output_attentions=output_attentions, rotary=rotary
            )
            if output_attentions:
                all_attentions += (probs,)
        hidden_states = self.final_norm(hidden_states)
        if output_hidden_states:
            all_hidden_states += (hidden_states,)
        return hidden_states, all_hidden_states, all_attentions


def pool_sequence(
    hidden_states: torch.Tensor, attention_mask: torch.Tensor | None, pooling: str
) -> torch.Tensor:
    """One vector per sequence from (B, T, H) states: the first ([CLS]) token with `pooling="cls"`, the mean over
    the positions `attention_mask` (B, T) keeps (all of them without a mask) with `"mean"`. Returns (B, H)."""
    if pooling == "cls":
        return hidden_states[:, 0]
    if attention_mask is None:
        return hidden_states.mean(dim=1)
    keep = attention_mask.unsqueeze(-1).to(hidden_states.dtype)  # (B, T, 1)
    return (hidden_states * keep).sum(dim=1) / keep.sum(dim=1).clamp(min=1)


class BudgetBertPooler(nn.Module):
    """BERT's pooler: dense + tanh on the sequence vector `config.classifier_pooling` reads (BERT's: [CLS])."""

    def __init__(self, config: BudgetBertConfig):
        super().__init__()
        self.pooling = config.classifier_pooling
        self.dense = nn.Linear(config.hidden_size, config.hidden_size, bias=config.linear_bias)

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        return torch.tanh(self.dense(pool_sequence(hidden_states, attention_mask, self.pooling)))  # (B, H)


class BudgetBertPreTrainedModel(PreTrainedModel):
    """Base class of the BudgetBert models: config class, weight initialisation, loading and saving."""

    config_class = BudgetBertConfig
    base_model_prefix = "budget_bert"
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _no_split_modules = ["BudgetBertEmbeddings", "BudgetBertLayer"]

    def _init_weights(self, module: nn.Module):
        """HF's initialisation (normal weights with `initializer_range`, zero biases, unit norms), plus the
        query/key norm weights at one and `initializer_range / sqrt(2 * num_hidden_layers)` for the residual output
        projections with `config.scale_residual_init` and for the head transform's dense layer with
        `config.scale_head_init`."""
        super()._init_weights(module)
        scaled_std = self.config.initializer_range / math.sqrt(2 * self.config.num_hidden_layers)
        if isinstance(module, BudgetBertQKNorm):
            init.ones_(module.weight)
        elif isinstance(module, ResidualOutputLinear) and self.config.scale_residual_init:
            init.normal_(module.weight, mean=0.0, std=scaled_std)
        elif isinstance(module, HeadTransformLinear) and self.config.scale_head_init:
            init.normal_(module.weight, mean=0.0, std=scaled_std)

    def resize_token_embeddings(
        self,
        new_num_tokens: int | None = None,
        pad_to_multiple_of: int | None = None,
        mean_resizing: bool = True,
    ) -> nn.Embedding:
        """Resize the vocabulary to `new_num_tokens` real tokens (HF semantics otherwise).

        The embedding and decoder keep `config.pad_vocab_size_multiple`-aligned rows (`pad_to_multiple_of`, when
        given, replaces that multiple) and `config.vocab_size` stays the real count, so the saved folder reloads.
        """
        if new_num_tokens is None and pad_to_multiple_of is None:
            return self.get_input_embeddings()
        if pad_to_multiple_of is not None:
            self.config.pad_vocab_size_multiple = pad_to_multiple_of
        vocab_size = self.config.vocab_size if new_num_tokens is None else new_num_tokens
        embeddings = super().resize_token_embeddings(
            vocab_size, pad_to_multiple_of=self.config.pad_vocab_size_multiple, mean_resizing=mean_resizing
        )
        self.config.vocab_size = vocab_size
        self.vocab_size = vocab_size
        if isinstance(decoder := self.get_output_embeddings(), BudgetBertDecoder):
            decoder.vocab_size = vocab_size
        return embeddings


class BudgetBertModel(BudgetBertPreTrainedModel):
    """The bare BudgetBert encoder: embeddings, encoder and (optionally) BERT's pooler."""

    def __init__(self, config: BudgetBertConfig, add_pooling_layer: bool = True):
        super().__init__(config)
        self.embeddings = BudgetBertEmbeddings(config)
        self.rotary = BudgetBertRotaryEmbedding(config) if config.position_embedding_type == "rope" else None
        self.encoder = BudgetBertEncoder(config)
        self.pooler = BudgetBertPooler(config) if add_pooling_layer else None
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embeddings.word_embeddings

    def set_input_embeddings(self, value: nn.Embedding):
        self.embeddings.word_embeddings = value

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
    ) -> BaseModelOutputWithPooling | tuple:
        """Encode a batch. `attention_mask` is (B, T) with 1 for tokens and 0 for padding; `position_ids` (B, T),
        0 to T - 1 by default, index the position table or give the rotary angles."""
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("Pass exactly one of `input_ids` and `inputs_embeds`.")
        output_attentions = self.config.output_attentions if output_attentions is None else output_attentions
        output_hidden_states = (
            self.config.output_hidden_states if output_hidden_states is None else output_hidden_states
        )
        return_dict = self.config.return_dict if return_dict is None else return_dict

        embedding_output = self.embeddings(input_ids, token_type_ids, position_ids, inputs_embeds)  # (B, T, H)
        # The bias must be in the dtype attention computes in (autocast's, when on): a float32 minimum would
        # overflow to -inf in bf16/fp16 and bring back NaN for rows without tokens.
        device_type = embedding_output.device.type
        compute_dtype = (
            torch.get_autocast_dtype(device_type)
            if torch.is_autocast_enabled(device_type)
            else embedding_output.dtype
        )
        bias = attention_bias(attention_mask, compute_dtype)  # (B, 1, 1, T) or None
        rotary = None
        if self.rotary is not None:
            rotary = self.rotary(embedding_output.shape[1], position_ids, embedding_output.device)
        sequence_output, hidden_states, attentions = self.encoder(
            embedding_output, bias, output_attentions, output_hidden_states, rotary
        )
        pooled_output = self.pooler(sequence_output, attention_mask) if self.pooler is not None else None
        output = BaseModelOutputWithPooling(
            last_hidden_state=sequence_output,
            pooler_output=pooled_output,
            hidden_states=hidden_states,
            attentions=attentions,
        )
        return output if return_dict else output.to_tuple()


def split_loss_kwargs(kwargs: dict) -> torch.Tensor | int | None:
    """Take `num_items_in_batch` (the Trainer's loss kwarg) out of `kwargs`; reject anything else by name."""
    num_items_in_batch = kwargs.pop("num_items_in_batch", None)
    if kwargs:
        raise TypeError(f"Unexpected keyword arguments: {', '.join(sorted(kwargs))}.")
    return num_items_in_batch


def reduce_loss(loss_fn, inputs: torch.Tensor, target: torch.Tensor, num_items_in_batch) -> torch.Tensor:
    """`loss_fn` averaged over items, or summed and divided by `num_items_in_batch` when that is given.

    The Trainer counts the items of all gradient-accumulation micro-batches on all processes and passes the
    count, so that sum / count is the true mean of the whole optimizer step; a per-micro-batch mean is not.
    """
    if num_items_in_batch is None:
        return loss_fn(inputs, target)
    return loss_fn(inputs, target, reduction="sum") / num_items_in_batch


class BudgetBertPredictionTransform(nn.Module):
    """The transform of the MLM head: dense + activation + norm. With `config.classifier_head="lm_head"` it is
    also the sequence classifier's head, under the same weight names, so a masked-LM checkpoint starts it."""

    def __init__(self, config: BudgetBertConfig):
        super().__init__()
        self.dense = HeadTransformLinear(config.hidden_size, config.hidden_size, bias=config.linear_bias)
        self.activation = ACT2FN[config.hidden_act]
        self.norm = make_norm(config)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.norm(self.activation(self.dense(hidden_states)))  # (..., H)


class BudgetBertDecoder(nn.Linear):
    """The MLM decoder over the padded vocabulary (`out_features` rows, aligned for the matrix product). The columns
    of the padding (from `vocab_size` on) come out -inf through the bias the product adds, so they are never
    predicted and nothing passes over the logits to mask them (an in-place mask costs copies of the logits in the
    backward pass)."""

    def __init__(self, in_features: int, out_features: int, vocab_size: int, bias: bool = True, **kwargs):
        super().__init__(in_features, out_features, bias=bias, **kwargs)
        self.vocab_size = vocab_size

    @classmethod
    def from_linear(cls, linear: nn.Linear, vocab_size: int) -> "BudgetBertDecoder":
        """A decoder over the parameters of `linear` (shared, not copied)."""
        decoder = cls(linear.in_features, linear.out_features, vocab_size, bias=linear.bias is not None, device="meta")
        decoder.weight, decoder.bias = linear.weight, linear.bias
        return decoder

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        bias = self.bias if self.bias is not None else hidden_states.new_zeros(self.out_features)
        padding = torch.arange(self.out_features, device=bias.device) >= self.vocab_size  # (Vp,)
        return F.linear(hidden_states, self.weight, bias.masked_fill(padding, float("-inf")))  # (..., Vp)


class BudgetBertLMHead(BudgetBertPredictionTransform):
    """MLM head: the transform, then the decoder over the padded vocabulary (its weight is tied to the word
    embeddings). Returns the padded logits, -inf in the padded columns; `BudgetBertForMaskedLM` slices them off.
    """

    def __init__(self, config: BudgetBertConfig):
        super().__init__(config)
        self.decoder = BudgetBertDecoder(
            config.hidden_size, config.padded_vocab_size, config.vocab_size, bias=config.decoder_bias
        )

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.decoder(super().forward(hidden_states))  # (..., Vp): the padded width keeps the product aligned


def masked_lm_loss(
    padded_logits: torch.Tensor, labels: torch.Tensor, num_items_in_batch
) -> torch.Tensor:
    """Cross-entropy in float32 from (..., Vp) logits (-inf in the padded columns: they take no probability) and
    (...) labels."""
    logits = padded_logits.float().view(-1, padded_logits.shape[-1])  # (N, Vp)
    return reduce_loss(F.cross_entropy, logits, labels.reshape(-1), num_items_in_batch)


class BudgetBertForMaskedLM(BudgetBertPreTrainedModel):
    """BudgetBert with the masked-language-modelling head.

    With `labels` and `config.sparse_mask_prediction`, the head runs only on the N positions whose label is not
    -100 and `logits` is (N, V), in row-major order of those positions; the loss equals the dense head's.
    Otherwise `logits` is (B, T, V). V is `config.vocab_size`, never the padded size.
    """

    _tied_weights_keys = {"lm_head.decoder.weight": "budget_bert.embeddings.word_embeddings.weight"}
    accepts_loss_kwargs = True

    def __init__(self, config: BudgetBertConfig):
        super().__init__(config)
        self.budget_bert = BudgetBertModel(config, add_pooling_layer=False)
        self.lm_head = BudgetBertLMHead(config)
        self.post_init()
        if config.sparse_mask_prediction:
            # The sparse head selects the labelled positions with `nonzero`, whose output size depends on the data.
            # `torch.compile` as the Trainer calls it (fullgraph=False) would break the training step's graph there
            # unless dynamo may capture such ops (a process-wide switch, which fullgraph=True implies): then one
            # graph serves every count of labelled tokens.
            torch._dynamo.config.capture_dynamic_output_shape_ops = True
        if config.tie_word_embeddings:
            # The tied decoder is never saved; naming it here lets the Trainer re-tie it when it resumes from a
            # checkpoint instead of warning that the checkpoint lacks it.
            self._keys_to_ignore_on_save = {"lm_head.decoder.weight"}

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head.decoder

    def set_output_embeddings(self, new_embeddings: nn.Linear):
        if not isinstance(new_embeddings, BudgetBertDecoder):  # HF's resize_token_embeddings builds an nn.Linear
            new_embeddings = BudgetBertDecoder.from_linear(new_embeddings, self.config.vocab_size)
        self.lm_head.decoder = new_embeddings

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> MaskedLMOutput | tuple:
        """`labels` is (B, T): the token id to predict, or -100 where nothing is predicted.

        `kwargs` takes the Trainer's `num_items_in_batch` (see `reduce_loss`).
        """
        num_items_in_batch = split_loss_kwargs(kwargs)
        return_dict = self.config.return_dict if return_dict is None else return_dict
        outputs = self.budget_bert(
            input_ids,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            return_dict=True,
        )
        sequence_output = outputs.last_hidden_state  # (B, T, H)

        if labels is not None and self.config.sparse_mask_prediction:
            labels = labels.reshape(-1)  # (B*T,)
            positions = labels.ne(IGNORE_INDEX).nonzero()  # (N, 1)
            labels = labels.gather(0, positions.squeeze(-1))  # (N,)
            hidden_size = sequence_output.shape[-1]
            # gather, not index_select: the latter's backward (index_add) is many times slower on CPU.
            sequence_output = sequence_output.reshape(-1, hidden_size).gather(
                0, positions.expand(-1, hidden_size)
            )  # (N, H)
        padded_logits = self.lm_head(sequence_output)  # (N, Vp) or (B, T, Vp)

        loss = None
        if labels is not None:
            loss = masked_lm_loss(padded_logits, labels, num_items_in_batch)
        logits = padded_logits[..., : self.config.vocab_size]  # (N, V) or (B, T, V)

        output = MaskedLMOutput(
            loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )
        return output if return_dict else output.to_tuple()


class BudgetBertForSequenceClassification(BudgetBertPreTrainedModel):
    """BudgetBert with a classification (or regression) head on one vector per sequence: BERT's pooler on [CLS] by
    default; `config.classifier_head` and `config.classifier_pooling` choose the head and what it reads.

    The loss follows HF's `BertForSequenceClassification`: `config.problem_type` (inferred on first use as HF
    does, and recorded in the config so that saved models and pipelines know it) selects mean squared error,
    cross-entropy or binary cross-entropy with logits.
    """

    accepts_loss_kwargs = True

    def __init__(self, config: BudgetBertConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        uses_lm_head = config.classifier_head == "lm_head"
        self.budget_bert = BudgetBertModel(config, add_pooling_layer=not uses_lm_head)
        # Named as in BudgetBertForMaskedLM, so that from_pretrained of a masked-LM checkpoint loads it.
        self.lm_head = BudgetBertPredictionTransform(config) if uses_lm_head else None
        classifier_dropout = config.classifier_dropout
        self.dropout = Dropout(config.hidden_dropout_prob if classifier_dropout is None else classifier_dropout)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> SequenceClassifierOutput | tuple:
        """`labels`: (B,) class ids, (B, num_labels) multi-hot floats, or (B,) / (B, num_labels) regression targets.

        `kwargs` takes the Trainer's `num_items_in_batch` (see `reduce_loss`).
        """
        num_items_in_batch = split_loss_kwargs(kwargs)
        return_dict = self.config.return_dict if return_dict is None else return_dict
        outputs = self.budget_bert(
            input_ids,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            return_dict=True,
        )
        if self.lm_head is None:
            pooled_output = outputs.pooler_output  # (B, H)
        else:
            pooled = pool_sequence(outputs.last_hidden_state, attention_mask, self.config.classifier_pooling)
            pooled_output = self.lm_head(pooled)  # (B, H)
        logits = self.classifier(self.dropout(pooled_output))  # (B, num_labels)

        loss = None
        if labels is not None:
            if self.config.problem_type is None:
                if self.num_labels == 1:
                    self.config.problem_type = "regression"
                elif labels.dtype in (torch.long, torch.int):
                    self.config.problem_type = "single_label_classification"
                else:
                    self.config.problem_type = "multi_label_classification"
            if self.config.problem_type == "regression":
                if self.num_labels == 1:
                    loss = reduce_loss(F.mse_loss, logits.squeeze(), labels.squeeze(), num_items_in_batch)
                else:
                    loss = reduce_loss(F.mse_loss, logits, labels, num_items_in_batch)
            elif self.config.problem_type == "single_label_classification":
                loss = reduce_loss(
                    F.cross_entropy, logits.view(-1, self.num_labels), labels.view(-1), num_items_in_batch
                )
            else:
                loss = reduce_loss(F.binary_cross_entropy_with_logits, logits, labels, num_items_in_batch)

        output = SequenceClassifierOutput(
            loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )
        return output if return_dict else output.to_tuple()


__all__ = [
    "BudgetBertForMaskedLM",
    "BudgetBertForSequenceClassification",
    "BudgetBertModel",
    "BudgetBertPreTrainedModel",
]
