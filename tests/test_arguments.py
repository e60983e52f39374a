"""run_mlm.py's flags: the seed's command parses with the seed's meaning, aliases agree, bad input is refused."""

import json
from pathlib import Path

import pytest

from budget_bert.pretraining.build import build_budget_callbacks
from budget_bert.pretraining.pretraining_arguments import (
    UNBOUNDED_MAX_STEPS,
    ArgumentError,
    build_parser,
    deepspeed_config_from_flags,
    gradient_accumulation_steps,
    parse_pretraining_args,
)
from trainer_callbacks.clock import BudgetClock, ManualTime
from trainer_callbacks.time_based_lr import TimeBasedLRCallback

REPO = Path(__file__).resolve().parents[1]

# The pretraining example of the seed README, flag for flag (with a dataset path and no Hub tokenizer).
SEED_COMMAND = """
--model_type bert-mlm --tokenizer_name bert-large-uncased --hidden_act gelu --hidden_size 1024
--num_hidden_layers 24 --num_attention_heads 16 --intermediate_size 4096 --hidden_dropout_prob 0.1
--attention_probs_dropout_prob 0.1 --encoder_ln_mode pre-ln --lr 1e-3 --train_batch_size 4096
--train_micro_batch_size_per_gpu 32 --lr_schedule time --curve linear --warmup_proportion 0.06
--gradient_clipping 0.0 --optimizer_type adamw --weight_decay 0.01 --adam_beta1 0.9 --adam_beta2 0.98
--adam_eps 1e-6 --total_training_time 24.0 --early_exit_time_marker 24.0 --dataset_path DATA
--output_dir OUT --print_steps 100 --num_epochs_between_checkpoints 10000 --job_name pretraining_experiment
--project_name budget-bert-pretraining --validation_epochs 3 --validation_epochs_begin 1
--validation_epochs_end 1 --validation_begin_proportion 0.05 --validation_end_proportion 0.01
--validation_micro_batch 16 --deepspeed --data_loader_type dist --do_validation --use_early_stopping
--early_stop_time 180 --early_stop_eval_loss 6 --seed 42 --fp16
""".split()


def _seed_argv(tmp_path, **replace):
    argv = [str(tmp_path / "data") if t == "DATA" else str(tmp_path / "out") if t == "OUT" else t for t in SEED_COMMAND]
    for flag, value in replace.items():
        i = argv.index(f"--{flag}")
        argv[i + 1] = str(value)
    return argv


def test_seed_command_parses_with_seed_meaning(tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "1")
    model, data, budget, training = parse_pretraining_args(_seed_argv(tmp_path))
    assert model.hidden_size == 1024 and model.num_hidden_layers == 24 and model.encoder_ln_mode == "pre-ln"
    assert training.learning_rate == 1e-3
    assert training.per_device_train_batch_size == 32
    assert training.gradient_accumulation_steps == 4096 // 32
    assert training.max_grad_norm == 0.0
    assert training.adam_epsilon == 1e-6 and training.adam_beta2 == 0.98
    assert training.logging_steps == 100
    assert training.per_device_eval_batch_size == 16
    assert training.run_name == "pretraining_experiment"
    assert training.fp16 and training.do_eval
    assert training.max_steps == UNBOUNDED_MAX_STEPS and training.lr_scheduler_type == "constant"
    assert training.deepspeed == deepspeed_config_from_flags(0)
    assert budget.total_seconds == 24 * 3600 and budget.stop_seconds == 24 * 3600
    assert budget.num_epochs_between_checkpoints == 10000 and budget.use_early_stopping
    assert data.dataset_path == str(tmp_path / "data")


@pytest.mark.parametrize(("world_size", "accumulation"), [(1, 128), (4, 32), (128, 1)])
def test_train_batch_size_sets_accumulation_from_world_size(world_size, accumulation):
    assert gradient_accumulation_steps(4096, 32, world_size) == accumulation


def test_train_batch_size_that_world_size_does_not_divide():
    with pytest.raises(ArgumentError, match="--train_batch_size 4096 is not a multiple of micro batch 32 x 3"):
        gradient_accumulation_steps(4096, 32, 3)


def test_hf_spelling_works_and_agreeing_twins_are_fine(tmp_path):
    argv = _seed_argv(tmp_path) + ["--learning_rate", "1e-3", "--per_device_train_batch_size", "32"]
    *_, training = parse_pretraining_args(argv)
    assert training.learning_rate == 1e-3


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--learning_rate", "5e-4"], "--lr 0.001 and --learning_rate 0.0005 disagree"),
        (["--max_grad_norm", "1.0"], "--gradient_clipping 0.0 and --max_grad_norm 1.0 disagree"),
        (["--logging_steps", "7"], "--print_steps 100 and --logging_steps 7.0 disagree"),
        (["--gradient_accumulation_steps", "3"], "implies --gradient_accumulation_steps 128"),
    ],
)
def test_disagreeing_twins_are_an_error(tmp_path, extra, message):
    with pytest.raises(ArgumentError, match=message):
        parse_pretraining_args(_seed_argv(tmp_path) + extra)


@pytest.mark.parametrize(
    ("replace", "flag"),
    [
        ({"total_training_time": 0}, "--total_training_time must be > 0"),
        ({"early_exit_time_marker": 30}, "--early_exit_time_marker 30.0 is after the budget"),
        ({"curve": "cosine"}, "--curve cosine"),
        ({"lr_schedule": "poly"}, "--lr_schedule poly"),
        ({"train_batch_size": 100}, "--train_batch_size 100 is not a multiple"),
        ({"optimizer_type": "lamb"}, "--optimizer_type lamb"),
    ],
)
def test_bad_values_name_the_flag(tmp_path, replace, flag):
    with pytest.raises(ArgumentError, match=flag):
        parse_pretraining_args(_seed_argv(tmp_path, **replace))


@pytest.mark.parametrize(
    ("markers", "message"),
    [("0.5,1.5", r"must be in \(0, 1\]"), ("0.9,0.5", "increasing"), ("0,0.5", r"must be in \(0, 1\]"), ("a", "numbers")],
)
def test_bad_markers(tmp_path, markers, message):
    with pytest.raises(ArgumentError, match=message):
        parse_pretraining_args(_seed_argv(tmp_path) + ["--finetune_time_markers", markers])


def test_every_problem_is_reported_at_once(tmp_path):
    with pytest.raises(ArgumentError) as error:
        parse_pretraining_args(_seed_argv(tmp_path, total_training_time=-1, curve="cosine"))
    assert "--total_training_time" in str(error.value) and "--curve" in str(error.value)


def test_missing_data_source(tmp_path):
    argv = ["--output_dir", str(tmp_path), "--total_training_time", "1"]
    with pytest.raises(ArgumentError, match="no training data: give --dataset_path"):
        parse_pretraining_args(argv)


def test_step_schedule_keeps_max_steps(tmp_path):
    argv = ["--output_dir", str(tmp_path), "--dataset_path", "d", "--lr_schedule", "step", "--max_steps", "7",
            "--lr_scheduler_type", "linear"]
    *_, budget, training = parse_pretraining_args(argv)
    assert training.max_steps == 7 and training.lr_scheduler_type == "linear" and budget.lr_schedule == "step"


def test_time_schedule_refuses_max_steps(tmp_path):
    with pytest.raises(ArgumentError, match="drop --max_steps"):
        parse_pretraining_args(_seed_argv(tmp_path) + ["--max_steps", "10"])


def test_deepspeed_file_is_checked(tmp_path):
    broken = tmp_path / "ds.json"
    broken.write_text("{not json")
    argv = _seed_argv(tmp_path)
    argv.insert(argv.index("--deepspeed") + 1, str(broken))
    argv.remove("--fp16")
    with pytest.raises(ArgumentError, match="is not valid JSON"):
        parse_pretraining_args(argv)


def test_deepspeed_file_is_used(tmp_path):
    argv = _seed_argv(tmp_path)
    argv.insert(argv.index("--deepspeed") + 1, str(REPO / "ds_configs" / "zero1.json"))
    *_, training = parse_pretraining_args(argv)
    assert training.deepspeed == str(REPO / "ds_configs" / "zero1.json")


@pytest.mark.parametrize("stage", [0, 1, 2, 3])
def test_shipped_deepspeed_configs_match_the_builder(stage):
    shipped = json.loads((REPO / "ds_configs" / f"zero{stage}.json").read_text())
    assert shipped == deepspeed_config_from_flags(stage)
    assert "optimizer" not in shipped and "scheduler" not in shipped


def test_apex_is_refused_with_the_fix(tmp_path):
    with pytest.raises(ArgumentError, match="apex is not supported"):
        parse_pretraining_args(_seed_argv(tmp_path) + ["--fp16_backend", "apex"])


def test_help_documents_every_flag():
    parser = build_parser()
    undocumented = [a.option_strings for a in parser._actions if a.option_strings and not a.help]
    assert undocumented == []
    text = parser.format_help()
    for token in SEED_COMMAND:
        if token.startswith("--"):
            assert token in text, token


@pytest.mark.parametrize("flag", ["--hub_strategy", "--hub_revision"])
def test_trainer_push_flags_that_would_be_ignored_are_refused(tmp_path, flag):
    with pytest.raises(ArgumentError, match=f"{flag} configures the Trainer's own push"):
        parse_pretraining_args(_seed_argv(tmp_path) + [flag, "checkpoint"])


def test_exp_curve_decay_flags_reach_the_lr_callback_in_budget_fractions(tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "1")
    argv = _seed_argv(tmp_path, curve="exp", total_training_time=24.0) + ["--decay_rate", "0.5", "--decay_step", "6"]
    _, _, budget, _ = parse_pretraining_args(argv)
    assert (budget.decay_rate, budget.decay_step) == (0.5, 6.0)
    now = ManualTime()
    clock = BudgetClock(budget.total_seconds, time_fn=now)
    clock.start()
    callbacks = build_budget_callbacks(clock, budget, shard_steps=10, has_validation=False, run_arguments={})
    (lr_callback,) = [c for c in callbacks if isinstance(c, TimeBasedLRCallback)]
    # Six hours after the warmup, the LR is half its peak.
    now.advance((0.06 * 24 + 6) * 3600)
    clock.tick()
    assert lr_callback.factor() == pytest.approx(0.5)


@pytest.mark.parametrize(
    ("flags", "message"), [(["--decay_rate", "0"], "--decay_rate"), (["--decay_step", "-1"], "--decay_step")]
)
def test_bad_exp_curve_decay_flags_name_the_flag(tmp_path, flags, message):
    with pytest.raises(ArgumentError, match=message):
        parse_pretraining_args(_seed_argv(tmp_path) + flags)
