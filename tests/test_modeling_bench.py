"""bench/model_throughput.py: flag validation, config overrides, the ModernBERT reference, the FLOP count, one
tiny interleaved run, and each model's inputs."""

import importlib.util
from pathlib import Path

import pytest


BENCH = Path(__file__).resolve().parents[1] / "bench" / "model_throughput.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("model_throughput", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


TINY_RUN = dict(preset="small", batch=2, seq_len=16, vocab_size=101, rounds=2, warmup_rounds=1)


@pytest.mark.parametrize(
    ("flag", "value"),
    [
        ("preset", "gpt-2"),
        ("dtype", "fp8"),
        ("batch", 0),
        ("rounds", 0),
        ("dropout", 1.0),
        ("references", "bert,gpt2"),
        ("references", ""),
        ("budget_bert_overrides", "mlp_type"),
        ("budget_bert_overrides", "no_such_field=1"),
        ("budget_bert_overrides", "mlp_type=swiglu"),
        ("budget_bert_overrides", "qk_norm=yes"),
        ("torch_compile", "budget_bert_defaults"),
    ],
)
def test_bad_flags_raise_naming_the_flag(bench, flag, value):
    with pytest.raises(ValueError, match=f"--{flag}"):
        bench.BenchmarkArguments(**{flag: value})


def test_torch_compile_needs_a_warmup_round_for_the_compilation(bench):
    with pytest.raises(ValueError, match="--torch_compile needs --warmup_rounds"):
        bench.BenchmarkArguments(**{**TINY_RUN, "warmup_rounds": 0}, torch_compile="budget_bert")


def test_torch_compile_wraps_only_the_named_models(bench, monkeypatch):
    compiled = []
    monkeypatch.setattr(bench.torch, "compile", lambda model, backend: compiled.append((model, backend)) or model)
    args = bench.BenchmarkArguments(
        **TINY_RUN, references="bert,budget_bert_defaults", torch_compile="budget_bert",
        torch_compile_backend="aot_eager",
    )
    results = bench.benchmark(args)
    assert [(type(model).__name__, backend) for model, backend in compiled] == [("BudgetBertForMaskedLM", "aot_eager")]
    assert set(results["tokens_per_second"]) == {"budget_bert", "bert", "budget_bert_defaults"}


def test_batch_defaults_to_the_preset(bench):
    assert bench.BenchmarkArguments(preset="bert-base").batch == 16


def test_overrides_are_typed_and_win_over_the_shared_flags(bench):
    text = "mlp_type=glu, position_embedding_type=rope,linear_bias=False,qk_norm=true,rope_theta=160000.0"
    text += ",encoder_ln_mode=post-ln"
    assert bench.parse_overrides(text) == dict(
        mlp_type="glu", position_embedding_type="rope", linear_bias=False, qk_norm=True, rope_theta=160000.0,
        encoder_ln_mode="post-ln",
    )
    args = bench.BenchmarkArguments(**TINY_RUN, budget_bert_overrides=text + ",hidden_dropout_prob=0")
    config = bench.budget_bert_config(args)
    assert (config.encoder_ln_mode, config.hidden_dropout_prob, config.attention_probs_dropout_prob) == (
        "post-ln", 0, args.dropout
    )
    assert config.intermediate_size == 680  # the gated MLP gets 2/3 of the preset's 1024 by default
    explicit = bench.BenchmarkArguments(**TINY_RUN, budget_bert_overrides="mlp_type=glu,intermediate_size=512")
    assert bench.budget_bert_config(explicit).intermediate_size == 512
    defaults = bench.budget_bert_config(args, overridden=False)
    assert (defaults.mlp_type, defaults.intermediate_size, defaults.encoder_ln_mode) == ("mlp", 1024, "pre-ln")


@pytest.mark.parametrize(("ungated", "gated"), [(1024, 680), (3072, 2048), (4096, 2728)])
def test_the_gated_width_keeps_the_parameters_of_the_ungated_mlp(bench, ungated, gated):
    assert bench.gated_intermediate_size(ungated) == gated
    assert abs(3 * gated - 2 * ungated) <= 12  # within half a multiple of 8, on each of the 3 matrices


def test_modernbert_has_the_shape_the_same_mlp_parameters_and_its_own_defaults(bench):
    args = bench.BenchmarkArguments(**TINY_RUN, references="modernbert,budget_bert_defaults")
    models = bench.build_models(args)
    assert list(models) == ["budget_bert", "modernbert", "budget_bert_defaults"]
    modernbert, budget_bert = models["modernbert"], models["budget_bert"]
    config = modernbert.config
    assert type(modernbert).__name__ == "ModernBertForMaskedLM" and config._attn_implementation == "sdpa"
    assert (config.num_hidden_layers, config.hidden_size, config.num_attention_heads) == (4, 256, 4)
    assert config.sparse_prediction and config.attention_dropout == 0 and not config.mlp_bias
    assert config.pad_token_id == 0 and all(module.training for module in modernbert.modules())
    ungated_layer = models["budget_bert_defaults"].budget_bert.encoder.layer[0]
    ungated = ungated_layer.intermediate.weight.numel() + ungated_layer.output.weight.numel()
    gated = sum(p.numel() for name, p in modernbert.named_parameters() if ".mlp.W" in name) / config.num_hidden_layers
    assert gated == pytest.approx(ungated, rel=0.01)
    assert budget_bert.config.mlp_type == "mlp"  # no overrides: the measured BudgetBert is today's


def test_flops_count_excludes_the_embeddings_and_the_tied_decoder(bench):
    args = bench.BenchmarkArguments(**TINY_RUN, references="bert,modernbert")
    models = bench.build_models(args)
    for name, model in models.items():
        config = model.config
        tables = [config.max_position_embeddings, 2] if name != "modernbert" else []  # positions, token types
        embedding_rows = model.get_input_embeddings().num_embeddings + sum(tables)
        total = sum(p.numel() for p in model.parameters())
        assert bench.non_embedding_parameters(model) == total - embedding_rows * config.hidden_size
        layers, hidden = config.num_hidden_layers, config.hidden_size
        expected = 6 * bench.non_embedding_parameters(model) + 12 * layers * hidden * args.seq_len
        assert bench.flops_per_token(model, args) == expected


def test_a_tiny_interleaved_run_reports_every_model_the_ratios_and_mfu(bench):
    args = bench.BenchmarkArguments(
        **TINY_RUN, peak_tflops=1.0, references="bert,modernbert,budget_bert_defaults",
        budget_bert_overrides="mlp_type=glu,position_embedding_type=rope,linear_bias=false",
    )
    results = bench.benchmark(args)
    assert set(results["tokens_per_second"]) == {"budget_bert", "bert", "modernbert", "budget_bert_defaults"}
    assert all(value > 0 for value in results["tokens_per_second"].values())
    assert set(results["ratio"]) == set(results["ratios"]) == {"bert", "modernbert", "budget_bert_defaults"}
    for name, ratios in results["ratios"].items():
        assert len(ratios) == args.rounds and results["ratio"][name] > 0 and results["cpu_time_ratio"][name] > 0
    models = bench.build_models(args)
    for name, mfu in results["mfu"].items():
        flops = bench.flops_per_token(models[name], args)
        assert mfu == pytest.approx(results["tokens_per_second"][name] * flops / 1e12)


def test_budget_bert_steps_without_the_all_ones_mask_and_the_references_with_it(bench, monkeypatch):
    inputs = {}

    class RecordingTrainee(bench.Trainee):
        def run(self, batches):
            wrapped = self.model.forward

            def forward(**batch):
                inputs[type(self.model).__name__] = sorted(batch)
                return wrapped(**batch)

            self.model.forward = forward
            return super().run(batches)

    monkeypatch.setattr(bench, "Trainee", RecordingTrainee)
    bench.benchmark(bench.BenchmarkArguments(**TINY_RUN, references="bert,modernbert,budget_bert_defaults"))
    # What each gets in training: run_mlm.py's collator drops a mask of ones, the stock collator does not.
    assert inputs == {"BudgetBertForMaskedLM": ["input_ids", "labels"],
                      "BertForMaskedLM": ["attention_mask", "input_ids", "labels"],
                      "ModernBertForMaskedLM": ["attention_mask", "input_ids", "labels"]}


def test_measure_peak_times_matrix_products_and_uses_the_rate_for_mfu(bench, monkeypatch):
    args = bench.BenchmarkArguments(**TINY_RUN, measure_peak=True, references="bert")
    assert bench.measure_matmul_tflops(args, size=64, repeats=2) > 0
    monkeypatch.setattr(bench, "measure_matmul_tflops", lambda args: 2.0)
    results = bench.benchmark(args)
    assert results["measured_peak_tflops"] == 2.0
    models = bench.build_models(args)
    for name, mfu in results["mfu"].items():
        flops = bench.flops_per_token(models[name], args)
        assert mfu == pytest.approx(results["tokens_per_second"][name] * flops / 2e12)
