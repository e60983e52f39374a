"""BudgetBert's encoder: BERT equivalence, attention paths and masks, pre-LN, outputs, gradient checkpointing (the
cross-cutting ones over every architecture option set of `modeling_fixtures.OPTION_SETS`)."""

import warnings

import pytest
import torch
from transformers import BertConfig, BertForMaskedLM, BertForSequenceClassification, BertModel

from budget_bert import BudgetBertForMaskedLM, BudgetBertForSequenceClassification, BudgetBertModel
from budget_bert import modeling_budget_bert
from budget_bert.convert import BERT_ARCHITECTURE, budget_bert_config_from_bert, load_bert_weights
from budget_bert.modeling_budget_bert import attention_bias
from modeling_fixtures import OPTION_SETS, TINY, tiny_config


def padded_batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """input_ids, attention_mask and token_type_ids of 3 rows: full, half padded, and one real token."""
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(5, TINY["vocab_size"], (3, 12), generator=generator)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, 6:] = 0
    attention_mask[2, 1:] = 0
    input_ids[attention_mask == 0] = 0
    token_type_ids = torch.zeros_like(input_ids)
    token_type_ids[0, 6:] = 1
    return input_ids, attention_mask, token_type_ids


@pytest.mark.parametrize(
    ("bert_class", "budget_class", "output"),
    [
        (BertModel, BudgetBertModel, "pooler_output"),
        (BertForMaskedLM, BudgetBertForMaskedLM, "logits"),
        (BertForSequenceClassification, BudgetBertForSequenceClassification, "logits"),
    ],
)
def test_post_ln_budget_bert_with_bert_weights_is_bert(bert_class, budget_class, output):
    torch.manual_seed(0)
    bert = bert_class(BertConfig(**TINY, num_labels=3)).eval()
    model = budget_class(budget_bert_config_from_bert(bert.config)).eval()
    load_bert_weights(model, bert)
    input_ids, attention_mask, token_type_ids = padded_batch()
    inputs = dict(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
    with torch.no_grad():
        expected = bert(**inputs, output_hidden_states=True)
        actual = model(**inputs, output_hidden_states=True)
    assert len(actual.hidden_states) == len(expected.hidden_states) == TINY["num_hidden_layers"] + 1
    for ours, theirs in zip(actual.hidden_states, expected.hidden_states):
        torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)
    torch.testing.assert_close(getattr(actual, output), getattr(expected, output), atol=1e-5, rtol=0)


def test_config_from_bert_sets_every_bert_switch_and_plain_init():
    config = budget_bert_config_from_bert(BertConfig(**TINY))
    assert {name: getattr(config, name) for name in BERT_ARCHITECTURE} == BERT_ARCHITECTURE
    assert (config.scale_residual_init, config.scale_head_init) == (False, False)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("encoder_ln_mode", "pre-ln"),
        ("mlp_type", "glu"),
        ("position_embedding_type", "rope"),
        ("linear_bias", False),
        ("norm_bias", False),
        ("decoder_bias", False),
        ("qk_norm", True),
    ],
)
def test_load_bert_weights_refuses_a_model_that_is_not_bert_shaped(field, value):
    bert = BertModel(BertConfig(**TINY))
    config = budget_bert_config_from_bert(bert.config, **{field: value})
    with pytest.raises(ValueError, match=f"{field}={value!r}"):
        load_bert_weights(BudgetBertModel(config), bert)


@pytest.mark.parametrize("options", OPTION_SETS)
@pytest.mark.parametrize("encoder_ln_mode", ["pre-ln", "post-ln"])
@pytest.mark.parametrize("layer_norm_type", ["layernorm", "rmsnorm"])
def test_sdpa_matches_eager_attention_on_a_padded_batch(encoder_ln_mode, layer_norm_type, options):
    torch.manual_seed(0)
    config = tiny_config(**{**options, "encoder_ln_mode": encoder_ln_mode, "layer_norm_type": layer_norm_type})
    model = BudgetBertModel(config).eval()
    input_ids, attention_mask, _ = padded_batch()
    sdpa = model(input_ids, attention_mask=attention_mask)
    eager = model(input_ids, attention_mask=attention_mask, output_attentions=True)
    assert sdpa.attentions is None and eager.attentions is not None
    torch.testing.assert_close(sdpa.last_hidden_state, eager.last_hidden_state, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("options", OPTION_SETS)
def test_padding_does_not_change_the_real_tokens(options):
    torch.manual_seed(0)
    model = BudgetBertModel(tiny_config(**options)).eval()
    input_ids, attention_mask, _ = padded_batch()
    batched = model(input_ids, attention_mask=attention_mask).last_hidden_state
    alone = model(input_ids[1:2, :6]).last_hidden_state
    torch.testing.assert_close(batched[1:2, :6], alone, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("options", OPTION_SETS)
@pytest.mark.parametrize("output_attentions", [False, True])
def test_a_row_of_padding_only_gives_no_nan(output_attentions, options):
    torch.manual_seed(0)
    model = BudgetBertForMaskedLM(tiny_config(**options)).train()
    input_ids, attention_mask, _ = padded_batch()
    attention_mask[2] = 0
    labels = torch.full_like(input_ids, -100)
    labels[0, 3] = 7
    out = model(input_ids, attention_mask=attention_mask, labels=labels, output_attentions=output_attentions)
    out.loss.backward()
    assert torch.isfinite(out.logits).all()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_attention_bias_is_finite_in_its_dtype_and_gives_uniform_weights_to_a_row_without_tokens(dtype):
    attention_mask = torch.tensor([[1, 1, 0], [0, 0, 0]])
    bias = attention_bias(attention_mask, dtype)
    assert bias.dtype == dtype and torch.isfinite(bias).all()
    probs = (torch.zeros(2, 1, 3, 3, dtype=dtype) + bias).float().softmax(-1)
    torch.testing.assert_close(probs[1], torch.full((1, 3, 3), 1 / 3))
    assert probs[0, ..., 2].max() == 0
    assert attention_bias(torch.ones_like(attention_mask), dtype) is None


def test_attention_bias_is_built_in_the_autocast_dtype(monkeypatch):
    # On CUDA, SDPA runs in the autocast dtype and would turn a float32 minimum into -inf (NaN rows).
    seen = []
    monkeypatch.setattr(
        modeling_budget_bert, "attention_bias", lambda mask, dtype: seen.append(dtype) or attention_bias(mask, dtype)
    )
    model = BudgetBertModel(tiny_config()).eval()
    input_ids, attention_mask, _ = padded_batch()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(input_ids, attention_mask=attention_mask)
    model(input_ids, attention_mask=attention_mask)
    assert seen == [torch.bfloat16, torch.float32]
    assert torch.isfinite(out.last_hidden_state).all()


def test_attention_probabilities_ignore_padding_and_sum_to_one():
    torch.manual_seed(0)
    model = BudgetBertModel(tiny_config()).eval()
    input_ids, attention_mask, _ = padded_batch()
    attentions = model(input_ids, attention_mask=attention_mask, output_attentions=True).attentions
    assert len(attentions) == TINY["num_hidden_layers"]
    for probs in attentions:
        assert probs.shape == (3, TINY["num_attention_heads"], 12, 12)
        torch.testing.assert_close(probs.sum(-1), torch.ones(3, TINY["num_attention_heads"], 12))
        assert probs[1, :, :, 6:].abs().max() < 1e-6


def test_hidden_states_are_the_embeddings_then_each_layer_ending_with_the_output():
    torch.manual_seed(0)
    model = BudgetBertModel(tiny_config()).eval()
    input_ids, attention_mask, _ = padded_batch()
    out = model(input_ids, attention_mask=attention_mask, output_hidden_states=True)
    assert len(out.hidden_states) == TINY["num_hidden_layers"] + 1
    torch.testing.assert_close(out.hidden_states[0], model.embeddings(input_ids))
    torch.testing.assert_close(out.hidden_states[-1], out.last_hidden_state)


def zero_residual_branches(model: BudgetBertModel) -> None:
    for layer in model.encoder.layer:
        for linear in (layer.attention.dense, layer.output):
            torch.nn.init.zeros_(linear.weight)
            torch.nn.init.zeros_(linear.bias)


def test_pre_ln_keeps_the_residual_stream_unnormalised_until_the_final_norm():
    torch.manual_seed(0)
    model = BudgetBertModel(tiny_config(encoder_ln_mode="pre-ln", layernorm_embedding=False)).eval()
    zero_residual_branches(model)
    input_ids, attention_mask, _ = padded_batch()
    out = model(input_ids, attention_mask=attention_mask, output_hidden_states=True)
    embeddings = out.hidden_states[0]
    for hidden in out.hidden_states[1:-1]:
        torch.testing.assert_close(hidden, embeddings)
    torch.testing.assert_close(out.last_hidden_state, model.encoder.final_norm(embeddings))


def test_post_ln_normalises_after_every_residual_sum():
    torch.manual_seed(0)
    model = BudgetBertModel(tiny_config(encoder_ln_mode="post-ln", layernorm_embedding=False)).eval()
    zero_residual_branches(model)
    input_ids, attention_mask, _ = padded_batch()
    out = model(input_ids, attention_mask=attention_mask, output_hidden_states=True)
    first = model.encoder.layer[0]
    expected = first.ffn_norm(first.attention_norm(out.hidden_states[0]))
    torch.testing.assert_close(out.hidden_states[1], expected)


@pytest.mark.parametrize(
    ("layer_norm_type", "norm_class"), [("layernorm", torch.nn.LayerNorm), ("rmsnorm", torch.nn.RMSNorm)]
)
def test_layer_norm_type_selects_every_norm(layer_norm_type, norm_class):
    model = BudgetBertForMaskedLM(tiny_config(layer_norm_type=layer_norm_type))
    norms = [m for m in model.modules() if isinstance(m, (torch.nn.LayerNorm, torch.nn.RMSNorm))]
    # embeddings, 2 per layer, final (pre-LN), MLM head
    assert len(norms) == 1 + 2 * TINY["num_hidden_layers"] + 1 + 1
    assert all(isinstance(m, norm_class) for m in norms)


def test_layernorm_embedding_false_drops_the_embedding_norm():
    with_norm = BudgetBertModel(tiny_config(layernorm_embedding=True))
    without = BudgetBertModel(tiny_config(layernorm_embedding=False))
    assert isinstance(with_norm.embeddings.norm, torch.nn.LayerNorm)
    assert isinstance(without.embeddings.norm, torch.nn.Identity)


@pytest.mark.parametrize("options", OPTION_SETS)
def test_default_positions_and_token_types_equal_explicit_ones_and_inputs_embeds_equal_ids(options):
    torch.manual_seed(0)
    model = BudgetBertModel(tiny_config(**options)).eval()
    input_ids, attention_mask, _ = padded_batch()
    default = model(input_ids, attention_mask=attention_mask).last_hidden_state
    explicit = model(
        input_ids,
        attention_mask=attention_mask,
        position_ids=torch.arange(12).expand(3, -1),
        token_type_ids=torch.zeros_like(input_ids),
    ).last_hidden_state
    embedded = model(
        inputs_embeds=model.get_input_embeddings()(input_ids), attention_mask=attention_mask
    ).last_hidden_state
    torch.testing.assert_close(default, explicit)
    torch.testing.assert_close(default, embedded)


def checkpointing_methods() -> list[str]:
    """HF's enabling methods present in this transformers version (5.24 renames gradient_ to activation_)."""
    names = ["gradient_checkpointing_enable", "activation_checkpointing_enable"]
    return [name for name in names if hasattr(BudgetBertForMaskedLM, name)]


@pytest.mark.parametrize("options", OPTION_SETS)
@pytest.mark.parametrize("dropout", [0.0, 0.1])
@pytest.mark.parametrize("method", checkpointing_methods())
def test_gradient_checkpointing_recomputes_layers_and_gives_the_same_gradients(method, dropout, options):
    torch.manual_seed(0)
    config = tiny_config(**options, hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout)
    model = BudgetBertForMaskedLM(config).train()
    input_ids, attention_mask, _ = padded_batch()
    labels = torch.where(torch.rand(input_ids.shape) < 0.3, input_ids, -100)

    def gradients() -> tuple[list[torch.Tensor], int]:
        calls = []
        hook = model.budget_bert.encoder.layer[0].attention.register_forward_hook(lambda *_: calls.append(1))
        model.zero_grad()
        torch.manual_seed(1)  # the same dropout masks in both runs
        model(input_ids, attention_mask=attention_mask, labels=labels).loss.backward()
        hook.remove()
        return [p.grad.clone() for p in model.parameters()], len(calls)

    plain, plain_calls = gradients()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        getattr(model, method)()
    checkpointed, checkpointed_calls = gradients()
    assert (plain_calls, checkpointed_calls) == (1, 2)
    for a, b in zip(plain, checkpointed):
        torch.testing.assert_close(a, b)


def test_return_dict_false_returns_a_tuple():
    model = BudgetBertModel(tiny_config()).eval()
    input_ids, attention_mask, _ = padded_batch()
    out = model(input_ids, attention_mask=attention_mask, return_dict=False)
    assert isinstance(out, tuple)
    torch.testing.assert_close(out[0], model(input_ids, attention_mask=attention_mask).last_hidden_state)


def test_unknown_keyword_arguments_are_rejected_by_name():
    model = BudgetBertForMaskedLM(tiny_config())
    input_ids, _, _ = padded_batch()
    with pytest.raises(TypeError, match="attention_maks"):
        model(input_ids, attention_maks=torch.ones_like(input_ids))
