"""BudgetBert's architecture options, each against its definition: gated MLP (ModernBERT's), rotary positions
(ModernBERT's rotation), bias switches, query/key norm, scaled residual init, the sequence classifier's head and
pooling; and a training graph without breaks."""

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForMaskedLM, ModernBertConfig
from transformers.models.modernbert import modeling_modernbert

from budget_bert import BudgetBertConfig, BudgetBertForMaskedLM, BudgetBertForSequenceClassification, BudgetBertModel
from budget_bert.modeling_budget_bert import (
    BudgetBertLayer,
    BudgetBertQKNorm,
    BudgetBertRotaryEmbedding,
    BudgetBertSelfAttention,
    HeadTransformLinear,
    ResidualOutputLinear,
    apply_rotary,
)
from modeling_fixtures import MIXED, MODERN, TINY, tiny_config


def modernbert_config(**overrides) -> ModernBertConfig:
    """A ModernBertConfig of the tiny shape."""
    shape = {name: TINY[name] for name in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads")}
    ids = dict(pad_token_id=0, bos_token_id=2, cls_token_id=2, eos_token_id=3, sep_token_id=3)
    return ModernBertConfig(**shape, **ids, intermediate_size=TINY["intermediate_size"], **overrides)


def padded_input(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(5, TINY["vocab_size"], (2, 10), generator=generator)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, 7:] = 0
    return input_ids, attention_mask


@pytest.mark.parametrize(("hidden_act", "linear_bias"), [("gelu", False), ("silu", True)])
def test_gated_mlp_is_modernberts_glu_input_half_then_gate_half(hidden_act, linear_bias):
    torch.manual_seed(0)
    layer = BudgetBertLayer(tiny_config(mlp_type="glu", hidden_act=hidden_act, linear_bias=linear_bias))
    reference = modeling_modernbert.ModernBertMLP(modernbert_config(hidden_activation=hidden_act, mlp_bias=linear_bias))
    assert layer.intermediate.weight.shape == (2 * TINY["intermediate_size"], TINY["hidden_size"])
    reference.load_state_dict(
        {f"Wi.{k}": v for k, v in layer.intermediate.state_dict().items()}
        | {f"Wo.{k}": v for k, v in layer.output.state_dict().items()}
    )
    hidden = torch.randn(2, 5, TINY["hidden_size"])
    torch.testing.assert_close(layer.feed_forward(hidden), reference(hidden))


def test_a_gated_mlp_of_two_thirds_the_width_has_the_parameters_of_the_ungated_one():
    def mlp_parameters(**options) -> int:
        layer = BudgetBertLayer(tiny_config(linear_bias=False, **options))
        return layer.intermediate.weight.numel() + layer.output.weight.numel()

    assert mlp_parameters(mlp_type="mlp", intermediate_size=48) == mlp_parameters(mlp_type="glu", intermediate_size=32)


def to_half_layout(x: torch.Tensor) -> torch.Tensor:
    """Reorder the head dimensions from pairs (2i, 2i + 1) to HF's rotate_half pairs (i, i + hs/2)."""
    return torch.cat((x[..., 0::2], x[..., 1::2]), dim=-1)


@pytest.mark.parametrize("compiling", [False, True])  # complex arithmetic in eager mode, real when compiling
@pytest.mark.parametrize("explicit_positions", [False, True])
def test_rotary_positions_rotate_queries_and_keys_as_modernbert_does_up_to_the_pair_layout(
    explicit_positions, compiling, monkeypatch
):
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: compiling)
    theta, seq_length, head_size = 500.0, 7, TINY["hidden_size"] // TINY["num_attention_heads"]
    rope_parameters = {kind: {"rope_type": "default", "rope_theta": theta}
                       for kind in ("full_attention", "sliding_attention")}
    reference = modeling_modernbert.ModernBertRotaryEmbedding(modernbert_config(rope_parameters=rope_parameters))
    if explicit_positions:
        position_ids = torch.tensor([[3, 4, 5, 6, 7, 8, 9], [0, 1, 2, 0, 1, 2, 3]])
    else:
        position_ids = torch.arange(seq_length).expand(2, -1)
    query, key = torch.randn(2, 2, TINY["num_attention_heads"], seq_length, head_size).unbind(0)  # (B, nh, T, hs)
    cos, sin = reference(query, position_ids, "full_attention")
    expected = modeling_modernbert.apply_rotary_pos_emb(to_half_layout(query), to_half_layout(key), cos, sin)

    rotary = BudgetBertRotaryEmbedding(tiny_config(position_embedding_type="rope", rope_theta=theta))
    cos_sin = rotary(seq_length, position_ids if explicit_positions else None, query.device)
    query_key = torch.stack((query, key), dim=2).transpose(1, 3)  # (B, T, 2, nh, hs), as the attention has them
    rotated = apply_rotary(query_key, *cos_sin).transpose(1, 3).unbind(2)
    for ours, theirs in zip(rotated, expected):
        torch.testing.assert_close(to_half_layout(ours), theirs)


def test_rotary_positions_keep_a_bfloat16_input_in_bfloat16():
    rotary = BudgetBertRotaryEmbedding(tiny_config(position_embedding_type="rope"))
    x = torch.randn(2, 5, 2, TINY["num_attention_heads"], 8)
    cos_sin = rotary(5, None, x.device)
    rotated = apply_rotary(x.bfloat16(), *cos_sin)
    assert rotated.dtype == torch.bfloat16
    torch.testing.assert_close(rotated.float(), apply_rotary(x, *cos_sin), atol=0.05, rtol=0.02)


def test_rotary_positions_replace_the_table_and_see_only_relative_positions():
    torch.manual_seed(0)
    model = BudgetBertModel(tiny_config(position_embedding_type="rope")).eval()
    assert model.embeddings.position_embeddings is None
    assert not any("position" in name for name, _ in model.named_parameters())
    input_ids, attention_mask = padded_input()
    positions = torch.arange(input_ids.shape[1]).expand_as(input_ids)
    with torch.no_grad():
        for layer in model.encoder.layer:
            layer.attention.qkv.weight.mul_(20.0)  # sharp attention: at init it is almost uniform
        default = model(input_ids, attention_mask=attention_mask).last_hidden_state
        shifted = model(input_ids, attention_mask=attention_mask, position_ids=positions + 11).last_hidden_state
        reversed_ = model(input_ids, attention_mask=attention_mask, position_ids=positions.flip(-1)).last_hidden_state
    torch.testing.assert_close(shifted, default, atol=1e-4, rtol=1e-4)
    assert (reversed_ - default).abs().max() > 0.1


def test_rope_theta_changes_the_angles():
    torch.manual_seed(0)
    model = BudgetBertModel(tiny_config(position_embedding_type="rope")).eval()
    input_ids, attention_mask = padded_input()
    with torch.no_grad():
        for layer in model.encoder.layer:
            layer.attention.qkv.weight.mul_(20.0)
        default = model(input_ids, attention_mask=attention_mask).last_hidden_state
        model.rotary.theta = 50.0
        other = model(input_ids, attention_mask=attention_mask).last_hidden_state
    assert (other - default).abs().max() > 0.1


def without_bias(model: torch.nn.Module) -> set[str]:
    """Names of the linear and LayerNorm layers of `model` that have no bias."""
    kinds = (torch.nn.Linear, torch.nn.LayerNorm)
    return {name for name, module in model.named_modules() if isinstance(module, kinds) and module.bias is None}


def layer_names(model: torch.nn.Module, kind: type) -> set[str]:
    """Names of the `kind` layers of `model`."""
    return {name for name, module in model.named_modules() if isinstance(module, kind)}


@pytest.mark.parametrize("model_class", [BudgetBertForMaskedLM, BudgetBertForSequenceClassification])
def test_bias_switches_remove_exactly_their_biases(model_class):
    model = model_class(tiny_config())
    head = {"lm_head.decoder", "classifier"}
    linears = layer_names(model, torch.nn.Linear) - head
    norms = layer_names(model, torch.nn.LayerNorm)
    assert {"lm_head.dense", "budget_bert.pooler.dense"} & linears  # the head's dense layer, or the pooler
    decoder = {"lm_head.decoder"} if model_class is BudgetBertForMaskedLM else set()
    assert without_bias(model) == set()
    assert without_bias(model_class(tiny_config(linear_bias=False))) == linears
    assert without_bias(model_class(tiny_config(norm_bias=False))) == norms
    assert without_bias(model_class(tiny_config(decoder_bias=False))) == decoder
    # MODERN's classifier head may differ from the default's (lm_head instead of the pooler): list its own layers.
    modern = model_class(tiny_config(**MODERN))
    modern_layers = (layer_names(modern, torch.nn.Linear) - head) | layer_names(modern, torch.nn.LayerNorm)
    assert without_bias(modern) == modern_layers | decoder


@pytest.mark.parametrize("qk_norm", [False, True])
def test_qk_norm_makes_attention_blind_to_the_scale_of_queries_and_keys(qk_norm):
    torch.manual_seed(0)
    attention = BudgetBertSelfAttention(tiny_config(qk_norm=qk_norm, linear_bias=False)).eval()
    hidden = torch.randn(2, 6, TINY["hidden_size"])
    with torch.no_grad():
        before, _ = attention(hidden)
        hidden_size = TINY["hidden_size"]
        attention.qkv.weight[:hidden_size] *= 4.0  # queries
        attention.qkv.weight[hidden_size : 2 * hidden_size] *= 3.0  # keys
        after, _ = attention(hidden)
    assert torch.allclose(after, before, atol=1e-5) is qk_norm


def test_qk_norm_is_rms_norm_of_each_head_times_its_weight_also_under_bf16_autocast():
    torch.manual_seed(0)
    norm = BudgetBertQKNorm(tiny_config(qk_norm=True))
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
    query_key = torch.randn(2, 5, 2, TINY["num_attention_heads"], TINY["hidden_size"] // TINY["num_attention_heads"])
    expected = torch.nn.functional.rms_norm(query_key, query_key.shape[-1:], eps=norm.eps) * norm.weight
    assert torch.allclose(norm(query_key), expected, atol=1e-6)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        in_bf16 = norm(query_key.bfloat16())
    assert in_bf16.dtype == torch.bfloat16
    assert torch.allclose(in_bf16.float(), expected, atol=0.05, rtol=0.02)


def test_qk_norm_weights_learn_and_are_initialised_to_one_when_missing_from_a_checkpoint(tmp_path):
    torch.manual_seed(0)
    model = BudgetBertForMaskedLM(tiny_config(qk_norm=True))
    input_ids, attention_mask = padded_input()
    model(input_ids, attention_mask=attention_mask, labels=input_ids).loss.backward()
    norm = model.budget_bert.encoder.layer[0].attention.qk_norm
    assert norm.weight.shape == (2, 1, TINY["hidden_size"] // TINY["num_attention_heads"])
    assert norm.weight.grad.abs().sum() > 0
    model.save_pretrained(tmp_path)
    weights = load_file(tmp_path / "model.safetensors")
    missing = [name for name in weights if name.endswith("qk_norm.weight")]
    assert len(missing) == TINY["num_hidden_layers"]
    save_file({k: v for k, v in weights.items() if k not in missing}, tmp_path / "model.safetensors",
              metadata={"format": "pt"})
    reloaded = AutoModelForMaskedLM.from_pretrained(tmp_path)
    for layer in reloaded.budget_bert.encoder.layer:
        assert torch.equal(layer.attention.qk_norm.weight, torch.ones_like(layer.attention.qk_norm.weight))


@pytest.mark.parametrize("scale_head_init", [False, True])
@pytest.mark.parametrize("scale_residual_init", [False, True])
def test_scaled_init_scales_only_the_residual_output_projections_and_the_head_dense(
    scale_residual_init, scale_head_init
):
    torch.manual_seed(0)
    config = tiny_config(hidden_size=64, intermediate_size=128, num_hidden_layers=4, mlp_type="glu",
                         classifier_head="lm_head", scale_residual_init=scale_residual_init,
                         scale_head_init=scale_head_init)
    scaled = config.initializer_range / (2 * config.num_hidden_layers) ** 0.5
    for model in (BudgetBertForMaskedLM(config), BudgetBertForSequenceClassification(config)):
        for name, module in model.named_modules():
            if isinstance(module, torch.nn.Linear) and name not in ("lm_head.decoder", "classifier"):
                expected = config.initializer_range
                if isinstance(module, ResidualOutputLinear) and scale_residual_init:
                    expected = scaled
                if name == "lm_head.dense" and scale_head_init:
                    expected = scaled
                assert module.weight.std().item() == pytest.approx(expected, rel=0.1), name
        residual = [name for name, m in model.named_modules() if isinstance(m, ResidualOutputLinear)]
        assert len(residual) == 2 * config.num_hidden_layers
        assert all(name.endswith(("attention.dense", ".output")) for name in residual)
        assert [name for name, m in model.named_modules() if isinstance(m, HeadTransformLinear)] == ["lm_head.dense"]


@pytest.mark.parametrize("options", [MODERN, MIXED], ids=["modern", "mixed"])
def test_a_training_step_compiles_to_one_graph_with_every_option(options):
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = BudgetBertForMaskedLM(tiny_config(**options)).train()
    input_ids, attention_mask = padded_input()
    labels = torch.where(torch.rand(input_ids.shape) < 0.3, input_ids, -100)
    labels[0, 0] = input_ids[0, 0]
    compiled = torch.compile(model, backend="eager", fullgraph=True)  # fullgraph: a graph break raises
    loss = compiled(input_ids, attention_mask=attention_mask, labels=labels).loss
    loss.backward()
    torch.testing.assert_close(loss, model(input_ids, attention_mask=attention_mask, labels=labels).loss)
    torch._dynamo.reset()


def test_the_lm_head_classifier_head_starts_from_the_pretrained_mlm_head(tmp_path):
    torch.manual_seed(0)
    masked_lm = BudgetBertForMaskedLM(tiny_config(classifier_head="lm_head"))
    masked_lm.save_pretrained(tmp_path)
    classifier = BudgetBertForSequenceClassification.from_pretrained(tmp_path, num_labels=3)
    assert classifier.budget_bert.pooler is None
    for name in ("dense.weight", "norm.weight", "norm.bias"):
        torch.testing.assert_close(classifier.lm_head.get_parameter(name), masked_lm.lm_head.get_parameter(name))
    input_ids, attention_mask = padded_input()
    sequence = classifier.budget_bert(input_ids, attention_mask=attention_mask).last_hidden_state
    expected = classifier.classifier(masked_lm.lm_head.norm(torch.nn.functional.gelu(
        masked_lm.lm_head.dense(sequence[:, 0]))))
    torch.testing.assert_close(classifier(input_ids, attention_mask=attention_mask).logits, expected)


def test_the_default_pooler_head_is_berts_and_starts_fresh(tmp_path):
    torch.manual_seed(0)
    BudgetBertForMaskedLM(tiny_config()).save_pretrained(tmp_path)
    classifier = BudgetBertForSequenceClassification.from_pretrained(tmp_path, num_labels=2)
    assert classifier.lm_head is None
    input_ids, attention_mask = padded_input()
    sequence = classifier.budget_bert(input_ids, attention_mask=attention_mask).last_hidden_state
    expected = classifier.classifier(torch.tanh(classifier.budget_bert.pooler.dense(sequence[:, 0])))
    torch.testing.assert_close(classifier(input_ids, attention_mask=attention_mask).logits, expected)


@pytest.mark.parametrize("classifier_head", ["pooler", "lm_head"])
@pytest.mark.parametrize("classifier_pooling", ["cls", "mean"])
def test_classifier_pooling_reads_the_first_token_or_the_mean_of_the_kept_ones(classifier_head, classifier_pooling):
    torch.manual_seed(0)
    model = BudgetBertForSequenceClassification(
        tiny_config(classifier_head=classifier_head, classifier_pooling=classifier_pooling, num_labels=2)
    ).eval()
    input_ids, attention_mask = padded_input()
    logits = model(input_ids, attention_mask=attention_mask).logits
    # The mean is over the kept positions only: the second sequence's padded tail does not count.
    states = model.budget_bert(input_ids, attention_mask=attention_mask).last_hidden_state
    pooled = states[:, 0] if classifier_pooling == "cls" else torch.stack([states[0].mean(0), states[1, :7].mean(0)])
    head = model.lm_head if classifier_head == "lm_head" else lambda x: torch.tanh(model.budget_bert.pooler.dense(x))
    torch.testing.assert_close(logits, model.classifier(head(pooled)))


@pytest.mark.parametrize(("field", "value"), [("classifier_head", "mlp"), ("classifier_pooling", "max")])
def test_an_unknown_classifier_head_or_pooling_is_refused(field, value):
    with pytest.raises(ValueError, match=field):
        BudgetBertConfig(**{field: value})
