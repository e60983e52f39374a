"""The budget planner (`python -m budget_bert.plan`): flags, the micro-batch and recommendation rules with injected
probe figures, the budget arithmetic, the printed command, and one real probe of the tiny shape on the CPU."""

import json
import shlex
from collections import namedtuple
from dataclasses import replace

import pytest
import torch

from budget_bert import plan
from budget_bert.plan import (
    SHAPES,
    Measurement,
    PlanArguments,
    TrainingStepProbe,
    choose_micro_batch,
    count_parameters,
    device_precisions,
    main,
    parse_plan_args,
    plan_budget,
    probe_shape,
    run_mlm_command,
)


JSON_TYPES = {
    "shape": str,
    "parameters": int,
    "micro_batch": int,
    "tokens_per_second": float,
    "steps_in_budget": int,
    "tokens_in_budget": int,
    "recommended": bool,
}


def fake_probe(figures: dict[str, list[Measurement]]):
    """A probe that returns `figures[shape]` instead of measuring."""
    return lambda name, shape, args: figures[name]


def fp32(micro_batch: int, tokens_per_second: float) -> list[Measurement]:
    return [Measurement("fp32", micro_batch, tokens_per_second)]


def args_for(**overrides) -> PlanArguments:
    values = dict(hours=1.0, device="cpu", precisions="fp32", vocab_size=1000, global_batch=256)
    values.update(overrides)
    return PlanArguments(**values)


def tokens_per_second_for(name: str, tokens_per_parameter: float, args: PlanArguments) -> float:
    """The per-device tokens/s at which shape `name` gets `tokens_per_parameter` in the budget (nproc 1)."""
    return tokens_per_parameter * count_parameters(SHAPES[name], args) / args.budget_seconds


# --- one real probe ---


@pytest.fixture(scope="module")
def real_plan(tmp_path_factory):
    """A real CPU probe of the tiny shape in every precision this CPU offers, through the command line."""
    path = tmp_path_factory.mktemp("plan") / "plan.json"
    argv = ["--hours", "1", "--shapes", "tiny", "--probe_seconds", "0.5", "--vocab_size", "1000",
            "--global_batch", "16", "--device", "cpu", "--output_json", str(path)]
    rows = main(argv)
    return rows, json.loads(path.read_text())


def test_real_probe_writes_the_json_keys_with_their_types(real_plan):
    rows, written = real_plan
    assert len(written) == 1
    for key, kind in JSON_TYPES.items():
        assert type(written[0][key]) is kind, key
    assert written[0]["shape"] == "tiny" and written[0]["recommended"] is True
    assert written[0]["tokens_per_second"] > 0 and written[0]["steps_in_budget"] > 0
    assert written[0]["micro_batch"] in (1, 2, 4, 8, 16)
    assert written[0]["parameters"] == count_parameters(SHAPES["tiny"], args_for())


def test_parameters_are_counted_on_the_model_the_probe_trains():
    args = args_for()
    model = TrainingStepProbe(SHAPES["small"], args).model
    assert count_parameters(SHAPES["small"], args) == sum(p.numel() for p in model.parameters())


def test_real_probe_measures_every_precision_the_cpu_offers_and_keeps_the_fastest(real_plan):
    (row,), _ = real_plan
    assert set(row.measured) == set(device_precisions("cpu"))
    assert row.precision == max(row.measured, key=row.measured.get)
    assert row.tokens_per_second_per_device == row.measured[row.precision]


# --- the micro batch ---


def test_micro_batch_candidates_keep_accumulation_whole():
    assert args_for(global_batch=96, nproc=2).micro_batch_candidates == [1, 2, 4, 8, 16]
    assert args_for(global_batch=4096).micro_batch_candidates[-1] == 4096
    assert args_for(global_batch=7).micro_batch_candidates == [1]


def test_micro_batch_is_the_largest_that_fits_without_a_speed_probe():
    assert choose_micro_batch([1, 2, 4, 8, 16, 32, 64, 128], fits=lambda b: b < 64) == 32
    assert choose_micro_batch([1, 2, 4], fits=lambda b: True) == 4
    assert choose_micro_batch([1, 2, 4], fits=lambda b: False) == 0


def test_cpu_micro_batch_stops_when_tokens_per_second_stops_improving():
    speeds = {1: 100.0, 2: 180.0, 4: 185.0, 8: 400.0}
    tried = []

    def speed(micro_batch):
        tried.append(micro_batch)
        return speeds[micro_batch]

    # 4 gains under 5% over 2: 2 is kept and 8 is never tried.
    assert choose_micro_batch([1, 2, 4, 8], fits=lambda b: True, tokens_per_second=speed) == 2
    assert tried == [1, 2, 4]
    assert choose_micro_batch([1, 2, 4, 8], fits=lambda b: b < 8, tokens_per_second=lambda b: 100.0 * b) == 4


def test_out_of_memory_is_caught_freed_and_ends_the_doubling(monkeypatch):
    probe = TrainingStepProbe(SHAPES["tiny"], args_for(seq=16))
    real_step = probe.step

    def step():
        if probe.batch["input_ids"].shape[0] >= 4:
            raise torch.OutOfMemoryError("fake: out of memory")
        real_step()

    monkeypatch.setattr(probe, "step", step)
    assert choose_micro_batch([1, 2, 4, 8], fits=probe.runs_without_oom) == 2
    assert probe.batch == {}
    assert all(p.grad is None for p in probe.model.parameters())


def test_cpu_memory_estimate_refuses_a_shape_that_would_not_fit(monkeypatch):
    Memory = namedtuple("Memory", "available")
    monkeypatch.setattr(plan.psutil, "virtual_memory", lambda: Memory(available=2**20))
    args = args_for(seq=16)
    assert probe_shape("tiny", SHAPES["tiny"], args) == [Measurement("fp32", 0, 0.0)]
    with pytest.raises(SystemExit, match="no candidate shape fits"):
        main(["--hours", "1", "--shapes", "tiny", "--device", "cpu", "--precisions", "fp32", "--seq", "16"])


def test_memory_estimate_grows_with_the_micro_batch():
    args, shape = args_for(), SHAPES["base"]
    parameters = count_parameters(shape, args)
    one, two = (plan.estimated_training_bytes(shape, parameters, b, args) for b in (1, 2))
    assert one > 16 * parameters and two - one == one - 16 * parameters


# --- the budget arithmetic ---


@pytest.mark.parametrize("nproc, efficiency", [(1, 0.9), (4, 0.9), (8, 0.75)])
def test_steps_tokens_and_accumulation_follow_tokens_per_second_and_hours(nproc, efficiency):
    args = args_for(hours=2.5, nproc=nproc, scaling_efficiency=efficiency, global_batch=1024, seq=64, shapes="tiny")
    figures = {"tiny": [Measurement("fp32", 16, 50_000.0), Measurement("bf16", 32, 80_000.0)]}
    (row,) = plan_budget(args, fake_probe(figures))
    total = 80_000.0 * (nproc * efficiency if nproc > 1 else 1)
    assert (row.precision, row.micro_batch, row.tokens_per_second_per_device) == ("bf16", 32, 80_000.0)
    assert row.tokens_per_second == pytest.approx(total)
    assert row.gradient_accumulation_steps == 1024 // (32 * nproc)
    assert row.gradient_accumulation_steps * 32 * nproc == 1024
    assert row.steps_in_budget == int(total * 2.5 * 3600 // (1024 * 64))
    assert row.tokens_in_budget == row.steps_in_budget * 1024 * 64
    assert row.tokens_per_parameter == pytest.approx(row.tokens_in_budget / row.parameters)


# --- the recommendation rule ---


@pytest.mark.parametrize(
    "tokens_per_parameter, expected",
    [
        ({"tiny": 400, "small": 100, "base": 30, "large": 21}, "large"),
        ({"tiny": 400, "small": 100, "base": 19, "large": 8}, "small"),
        ({"tiny": 19, "small": 5, "base": 1, "large": 0.5}, "tiny"),  # none reaches 20: the best fed
        ({"tiny": 2, "small": 5, "base": 1, "large": 0.5}, "small"),
    ],
)
def test_recommendation_is_the_largest_shape_with_enough_tokens_per_parameter(tokens_per_parameter, expected):
    args = args_for(hours=10.0, global_batch=1)
    figures = {name: fp32(1, tokens_per_second_for(name, tpp, args)) for name, tpp in tokens_per_parameter.items()}
    rows = plan_budget(args, fake_probe(figures))
    assert [row.shape for row in rows if row.recommended] == [expected]


def test_the_threshold_flag_changes_the_recommendation():
    args = args_for(hours=10.0, global_batch=1)
    figures = {name: fp32(1, tokens_per_second_for(name, tpp, args))
               for name, tpp in {"tiny": 400, "small": 100, "base": 30, "large": 10}.items()}
    recommended = {}
    for threshold in (5, 20, 50, 1000):
        rows = plan_budget(replace(args, min_tokens_per_parameter=threshold), fake_probe(figures))
        recommended[threshold] = next(row.shape for row in rows if row.recommended)
    assert recommended == {5: "large", 20: "base", 50: "small", 1000: "tiny"}


def test_a_shape_that_does_not_fit_is_never_recommended(capsys, tmp_path):
    args = args_for(hours=10.0, global_batch=1)
    figures = {"tiny": fp32(1, tokens_per_second_for("tiny", 100, args)), "small": fp32(0, 0.0),
               "base": fp32(0, 0.0), "large": fp32(0, 0.0)}
    path = tmp_path / "plan.json"
    main(["--hours", "10", "--global_batch", "1", "--device", "cpu", "--precisions", "fp32", "--vocab_size", "1000",
          "--output_json", str(path)], probe=fake_probe(figures))
    written = json.loads(path.read_text())
    assert [row["shape"] for row in written if row["recommended"]] == ["tiny"]
    assert [row["micro_batch"] for row in written] == [1, 0, 0, 0]
    assert capsys.readouterr().out.count("no fit") == 3


# --- output ---


def test_printed_plan_has_the_table_rule_citations_and_command(capsys):
    figures = {"tiny": fp32(64, 1e6), "small": fp32(32, 2e5)}
    argv = ["--hours", "1", "--shapes", "tiny,small", "--nproc", "4", "--device", "cpu", "--precisions", "fp32"]
    rows = main(argv, probe=fake_probe(figures))
    out = capsys.readouterr().out
    table = [line for line in out.splitlines() if line.startswith(("tiny ", "small "))]
    assert len(table) == 2 and sum("<==" in line for line in table) == 1
    assert "Assumed: 4 processes" in out and "90% scaling efficiency" in out
    for citation in ("Hoffmann et al. 2022", "Izsak et al. 2021", "Geiping & Goldstein 2022", "at least 20 tokens"):
        assert citation in " ".join(out.split())
    (recommended,) = [row for row in rows if row.recommended]
    assert out.rstrip().splitlines()[-1] == run_mlm_command(recommended, parse_plan_args(argv))


def test_help_states_the_rule_with_its_sources(capsys):
    with pytest.raises(SystemExit):
        parse_plan_args(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "Hoffmann et al. 2022" in text and "Cramming" in text and "--scaling_efficiency" in text


def _command_flags(command: str) -> dict[str, str | None]:
    tokens = shlex.split(command.split("run_mlm.py", 1)[1])
    flags = {}
    for i, token in enumerate(tokens):
        if token.startswith("--"):
            flags[token[2:]] = tokens[i + 1] if i + 1 < len(tokens) and not tokens[i + 1].startswith("--") else None
    return flags


@pytest.mark.parametrize("nproc, precision", [(1, "fp32"), (8, "bf16")])
def test_command_carries_the_shape_batch_budget_and_precision(nproc, precision):
    args = args_for(hours=24.0, nproc=nproc, shapes="large", global_batch=4096)
    (row,) = plan_budget(args, fake_probe({"large": [Measurement(precision, 32, 1e5)]}))
    command = run_mlm_command(row, args)
    launcher = "python run_mlm.py " if nproc == 1 else f"torchrun --nproc_per_node {nproc} run_mlm.py "
    assert command.startswith(launcher)
    expected = {
        "hidden_size": "1024", "num_hidden_layers": "24", "num_attention_heads": "16", "intermediate_size": "4096",
        "train_batch_size": "4096", "train_micro_batch_size_per_gpu": "32", "total_training_time": "24",
        "dataset_path": "$DATASET_PATH", "output_dir": "$OUTPUT_DIR",
    }
    if precision == "bf16":
        expected["bf16"] = None
    assert _command_flags(command) == expected


def test_command_parses_with_run_mlm_parser(tmp_path):
    arguments = pytest.importorskip("budget_bert.pretraining.pretraining_arguments")
    args = args_for(hours=3.0, shapes="small")
    (row,) = plan_budget(args, fake_probe({"small": [Measurement("bf16", 64, 1e5)]}))
    command = run_mlm_command(row, args).replace("$DATASET_PATH", str(tmp_path)).replace("$OUTPUT_DIR", str(tmp_path))
    namespace, unknown = arguments.build_parser().parse_known_args(shlex.split(command)[2:])
    assert unknown == []
    assert (namespace.hidden_size, namespace.num_hidden_layers, namespace.intermediate_size) == (256, 4, 1024)
    assert (namespace.train_batch_size, namespace.train_micro_batch_size_per_gpu) == (256, 64)
    assert (namespace.total_training_time, namespace.bf16) == (3.0, True)


# --- bad flags ---


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--hours", "0"], "--hours must be > 0, got 0.0"),
        (["--hours", "1", "--shapes", "tiny,huge"], "--shapes: unknown shape(s) huge; choose from tiny, small"),
        (["--hours", "1", "--shapes", "tiny,tiny"], "--shapes tiny,tiny names a shape twice"),
        (["--hours", "1", "--nproc", "3", "--global_batch", "64"], "--global_batch 64 is not a multiple of --nproc 3"),
        (["--hours", "1", "--nproc", "0"], "--nproc must be >= 1"),
        (["--hours", "1", "--probe_seconds", "0"], "--probe_seconds must be > 0"),
        (["--hours", "1", "--scaling_efficiency", "1.5"], "--scaling_efficiency must be in (0, 1]"),
        (["--hours", "1", "--device", "tpu"], "--device must be cpu or cuda, got tpu"),
        (["--hours", "1", "--device", "cpu", "--precisions", "fp16"], "--precisions: fp16 not available on cpu"),
        (["--hours", "1", "--min_tokens_per_parameter", "-1"], "--min_tokens_per_parameter must be > 0"),
    ],
)
def test_bad_flags_exit_2_with_one_line_naming_the_flag(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse_plan_args(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and err.startswith("python -m budget_bert.plan: error:")


def test_cuda_is_refused_where_there_is_none(capsys):
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is visible")
    with pytest.raises(SystemExit):
        parse_plan_args(["--hours", "1", "--device", "cuda"])
    assert "--device cuda: no CUDA device is visible; use --device cpu" in capsys.readouterr().err
