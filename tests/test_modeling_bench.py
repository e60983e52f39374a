"""bench/model_throughput.py: flag validation, the FLOP count, and one tiny interleaved run."""

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
    ("flag", "value"), [("preset", "gpt-2"), ("dtype", "fp8"), ("batch", 0), ("rounds", 0), ("dropout", 1.0)]
)
def test_bad_flags_raise_naming_the_flag(bench, flag, value):
    with pytest.raises(ValueError, match=f"--{flag}"):
        bench.BenchmarkArguments(**{flag: value})


def test_batch_defaults_to_the_preset(bench):
    assert bench.BenchmarkArguments(preset="bert-base").batch == 16


def test_flops_count_excludes_the_embeddings_and_the_tied_decoder(bench):
    args = bench.BenchmarkArguments(**TINY_RUN)
    models = bench.build_models(args)
    for model in models.values():
        config = model.config
        embedding_rows = model.get_input_embeddings().num_embeddings + config.max_position_embeddings + 2
        total = sum(p.numel() for p in model.parameters())
        assert bench.non_embedding_parameters(model) == total - embedding_rows * config.hidden_size
        layers, hidden = config.num_hidden_layers, config.hidden_size
        expected = 6 * bench.non_embedding_parameters(model) + 12 * layers * hidden * args.seq_len
        assert bench.flops_per_token(model, args) == expected


def test_a_tiny_interleaved_run_reports_both_models_the_ratio_and_mfu(bench):
    args = bench.BenchmarkArguments(**TINY_RUN, peak_tflops=1.0)
    results = bench.benchmark(args)
    assert set(results["tokens_per_second"]) == {"bert", "budget_bert"}
    assert all(value > 0 for value in results["tokens_per_second"].values())
    assert len(results["ratios"]) == args.rounds and results["ratio"] > 0
    for name, mfu in results["mfu"].items():
        flops = bench.flops_per_token(bench.build_models(args)[name], args)
        assert mfu == pytest.approx(results["tokens_per_second"][name] * flops / 1e12)


def test_measure_peak_times_matrix_products_and_uses_the_rate_for_mfu(bench, monkeypatch):
    args = bench.BenchmarkArguments(**TINY_RUN, measure_peak=True)
    assert bench.measure_matmul_tflops(args, size=64, repeats=2) > 0
    monkeypatch.setattr(bench, "measure_matmul_tflops", lambda args: 2.0)
    results = bench.benchmark(args)
    assert results["measured_peak_tflops"] == 2.0
    for name, mfu in results["mfu"].items():
        flops = bench.flops_per_token(bench.build_models(args)[name], args)
        assert mfu == pytest.approx(results["tokens_per_second"][name] * flops / 2e12)
