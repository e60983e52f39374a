"""run_mlm.py's flags: the seed's command parses with the seed's meaning, every flag is checked once at parse time
(a flag that cannot act in the combination given is an error naming both flags), and every budget flag acts."""

import dataclasses
import json
import logging
import math
import os
import re
import shutil
from unittest import mock
from pathlib import Path

import pytest
import torch
from transformers import BertConfig, ModernBertConfig, TrainerControl, TrainerState

from budget_bert import BudgetBertConfig
from budget_bert.cli import UsageError
from budget_bert.data.metadata import METADATA_NAME
from budget_bert.pretraining.build import build_budget_callbacks, keep_cpu_memory_if_asked
from budget_bert.pretraining.recipe import recipe_value
from budget_bert.pretraining.pretraining_arguments import (
    UNBOUNDED_MAX_STEPS,
    BudgetArguments,
    build_parser,
    deepspeed_config_from_flags,
    deepspeed_cpu_fp16,
    gradient_accumulation_steps,
    parse_pretraining_args,
)
from trainer_callbacks import (
    BudgetCallback,
    BudgetClock,
    BudgetEarlyStoppingCallback,
    FinetuneSnapshotCallback,
    ManualTime,
    ShardCheckpointCallback,
    TimeBasedLRCallback,
    ValidationScheduleCallback,
)
from trainer_callbacks.checkpoints import mark_complete
from trainer_callbacks.schedule_record import ScheduleRecord
from pretraining_fixtures import REPO, TINY_MODEL_FLAGS, prepared_data  # noqa: F401 - fixture


# DeepSpeed's CPU fp16 needs oneDNN fp16 kernels; where the CPU lacks them, the seed's --fp16 is refused (tested
# below) and the other tests run the seed's command with --bf16.
FP16 = torch.cuda.is_available() or deepspeed_cpu_fp16()

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


def seed_argv(data, tmp_path, **replace) -> list[str]:
    """The seed's command on the prepared test data, with `replace` values; --bf16 where fp16 cannot run."""
    paths = {"DATA": str(data.dataset), "OUT": str(tmp_path / "out")}
    argv = [paths.get(token, token) for token in SEED_COMMAND]
    for flag, value in replace.items():
        argv[argv.index(f"--{flag}") + 1] = str(value)
    return argv if FP16 else [("--bf16" if token == "--fp16" else token) for token in argv]


def tiny_argv(data, tmp_path, *extra) -> list[str]:
    """A small run on the prepared test data: defaults everywhere else."""
    return ["--dataset_path", str(data.dataset), "--output_dir", str(tmp_path / "out"), *TINY_MODEL_FLAGS, *extra]


def problems_of(argv) -> list[str]:
    """The problems `parse_pretraining_args` reports for `argv` (it must refuse it)."""
    with pytest.raises(UsageError) as error:
        parse_pretraining_args([str(token) for token in argv])
    return error.value.problems


def test_seed_command_parses_with_seed_meaning(prepared_data, tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "1")
    args = parse_pretraining_args(seed_argv(prepared_data, tmp_path))
    model, data, budget, training = args.model, args.data, args.budget, args.training
    assert model.hidden_size == 1024 and model.num_hidden_layers == 24 and model.encoder_ln_mode == "pre-ln"
    assert isinstance(args.model_config, BudgetBertConfig) and args.model_config.num_attention_heads == 16
    assert training.learning_rate == 1e-3
    assert training.per_device_train_batch_size == 32
    assert training.gradient_accumulation_steps == 4096 // 32
    assert training.max_grad_norm == 0.0
    assert training.adam_epsilon == 1e-6 and training.adam_beta2 == 0.98
    assert training.logging_steps == 100
    assert training.per_device_eval_batch_size == 16
    assert training.run_name == "pretraining_experiment"
    assert (training.fp16 or not FP16) and training.do_eval
    assert training.max_steps == UNBOUNDED_MAX_STEPS and training.lr_scheduler_type == "constant"
    assert training.deepspeed == deepspeed_config_from_flags(0)
    assert budget.budget_seconds == 24 * 3600 and budget.stop_seconds == 24 * 3600
    assert budget.early_stop_seconds == 180 * 60
    assert budget.num_epochs_between_checkpoints == 10000 and budget.use_early_stopping
    assert data.dataset_path == str(prepared_data.dataset) and args.metadata.vocab_size == prepared_data.vocab_size


@pytest.mark.skipif(FP16, reason="DeepSpeed runs fp16 on this machine")
def test_fp16_that_deepspeed_cannot_run_here_is_refused(prepared_data, tmp_path):
    argv = [token for token in seed_argv(prepared_data, tmp_path) if token != "--bf16"] + ["--fp16"]
    assert any(p.startswith("--fp16 with --deepspeed on this CPU") for p in problems_of(argv))


def test_training_arguments_are_settled_at_parse_time(prepared_data, tmp_path):
    args = parse_pretraining_args(tiny_argv(
        prepared_data, tmp_path, "--push_to_hub", "--hub_model_id", "me/run", "--hub_token", "hf_x",
        "--save_total_limit", "2",
    ))
    training = args.training
    # The Trainer's own push and rotation are off; run_mlm.py's pusher and complete-checkpoint rotation have them.
    assert (training.push_to_hub, training.hub_token, training.save_total_limit) == (False, None, None)
    assert args.hub_push.repo_id == "me/run" and args.hub_push.token == "hf_x" and args.save_total_limit == 2
    assert training.save_strategy == "no" and training.logging_nan_inf_filter is False
    assert training.resume_from_checkpoint is None
    assert "hf_x" not in json.dumps(args.run_arguments())


def test_a_complete_checkpoint_in_output_dir_is_chosen_at_parse_time(prepared_data, tmp_path):
    checkpoint = tmp_path / "out" / "checkpoint-7"
    checkpoint.mkdir(parents=True)
    (checkpoint / "trainer_state.json").write_text("{}")
    mark_complete(checkpoint, 7)
    assert parse_pretraining_args(tiny_argv(prepared_data, tmp_path)).training.resume_from_checkpoint == str(
        checkpoint
    )
    fresh = parse_pretraining_args(tiny_argv(prepared_data, tmp_path, "--overwrite_output_dir"))
    assert fresh.training.resume_from_checkpoint is None


def test_a_json_argument_file_reads_as_its_flags(prepared_data, tmp_path):
    path = tmp_path / "args.json"
    path.write_text(json.dumps({
        "dataset_path": str(prepared_data.dataset), "output_dir": str(tmp_path / "out"), "hidden_size": 64,
        "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 128, "max_position_embeddings": 64,
        "do_validation": True, "finetune_time_markers": "0.5", "lr": 2e-3,
    }))
    args = parse_pretraining_args([str(path)])
    assert args.budget.do_validation and args.budget.markers == [0.5] and args.training.learning_rate == 2e-3
    assert "--lr" in args.flags  # the resume command repeats the flags, not the file


@pytest.mark.parametrize(("world_size", "accumulation"), [(1, 128), (4, 32), (128, 1)])
def test_train_batch_size_sets_accumulation_from_world_size(world_size, accumulation):
    assert gradient_accumulation_steps(4096, 32, world_size) == accumulation


def test_train_batch_size_that_world_size_does_not_divide():
    with pytest.raises(UsageError, match="--train_batch_size 4096 is not a multiple of micro batch 32 x 3"):
        gradient_accumulation_steps(4096, 32, 3)


def test_hf_spelling_works_and_agreeing_twins_are_fine(prepared_data, tmp_path):
    argv = seed_argv(prepared_data, tmp_path) + ["--learning_rate", "1e-3", "--per_device_train_batch_size", "32"]
    assert parse_pretraining_args(argv).training.learning_rate == 1e-3


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--learning_rate", "5e-4"], "--lr 0.001 and --learning_rate 0.0005 disagree"),
        (["--max_grad_norm", "1.0"], "--gradient_clipping 0.0 and --max_grad_norm 1.0 disagree"),
        (["--logging_steps", "7"], "--print_steps 100 and --logging_steps 7.0 disagree"),
        (["--gradient_accumulation_steps", "3"], "implies --gradient_accumulation_steps 128"),
    ],
)
def test_disagreeing_twins_are_an_error(prepared_data, tmp_path, extra, message):
    assert any(message in problem for problem in problems_of(seed_argv(prepared_data, tmp_path) + extra))


@pytest.mark.parametrize(
    ("replace", "message"),
    [
        ({"total_training_time": 0}, "--total_training_time must be a positive number of hours"),
        ({"total_training_time": "nan"}, "--total_training_time must be a positive number of hours, got nan"),
        ({"early_exit_time_marker": 30}, "--early_exit_time_marker 30.0 is after the budget"),
        ({"early_stop_time": -1}, "--early_stop_time must be >= 0 minutes"),
        ({"curve": "cosine"}, "--curve cosine"),
        ({"lr_schedule": "poly"}, "--lr_schedule poly"),
        ({"train_batch_size": 100}, "--train_batch_size 100 is not a multiple"),
        ({"optimizer_type": "lamb"}, "--optimizer_type lamb"),
        ({"num_attention_heads": 5}, "--hidden_size (1024) must be divisible by --num_attention_heads (5)"),
        ({"encoder_ln_mode": "mid-ln"}, "--encoder_ln_mode must be one of"),
        ({"model_type": "gpt2"}, "--model_type gpt2 is not a masked LM"),
    ],
)
def test_bad_values_are_one_line_each_naming_the_flag(prepared_data, tmp_path, replace, message):
    problems = problems_of(seed_argv(prepared_data, tmp_path, **replace))
    assert any(message in problem for problem in problems), problems
    assert all("\n" not in problem for problem in problems)


@pytest.mark.parametrize(
    ("markers", "message"),
    [("0.5,1.5", r"must be in \(0, 1\]"), ("0.9,0.5", "increasing"), ("0,0.5", r"must be in \(0, 1\]"),
     ("a", "numbers"), ("0.1234561,0.1234562", "share a snapshot name")],
)
def test_bad_markers(prepared_data, tmp_path, markers, message):
    problems = problems_of(seed_argv(prepared_data, tmp_path) + ["--finetune_time_markers", markers])
    assert any(re.search(message, problem) for problem in problems), problems


def test_every_problem_is_reported_at_once(prepared_data, tmp_path):
    problems = problems_of(seed_argv(prepared_data, tmp_path, total_training_time=-1, curve="cosine"))
    assert any("--total_training_time" in p for p in problems) and any("--curve" in p for p in problems)


def test_an_absurd_budget_is_a_warning(prepared_data, tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        args = parse_pretraining_args(tiny_argv(prepared_data, tmp_path, "--total_training_time", "1e9"))
    assert args.budget.total_training_time == 1e9
    assert "--total_training_time 1e+09 hours is more than a year" in caplog.text


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--use_early_stopping"], "--use_early_stopping stops on the validation loss: add --do_validation"),
        (["--early_stop_time", "10"], "--early_stop_time only applies with --use_early_stopping"),
        (["--validation_epochs", "2"], "--validation_epochs schedules validation, which runs only with"),
        (["--lr_schedule", "step", "--warmup_proportion", "0.1"], "--warmup_proportion shapes the time-based"),
        (["--decay_rate", "0.5"], f"--decay_rate applies to --curve exp, not --curve {recipe_value('curve')}"),
        (["--warmup_steps", "10"], "--warmup_steps is ignored by --lr_schedule time: use --warmup_proportion"),
        (["--hub_push_timeout", "5"], "--hub_push_timeout only applies with --push_to_hub"),
        (["--num_shards", "4"], "--num_shards applies to raw text prepared on the fly"),
        (["--zero_stage", "2"], "--zero_stage sets the stage of the DeepSpeed config built for a bare --deepspeed"),
        (["--overwrite_output_dir", "--resume_from_checkpoint", "x"], "--overwrite_output_dir starts afresh"),
        (["--config_name", "x.json"], "--hidden_size shapes a fresh BudgetBert and does not apply to --config_name"),
        (["--model_type", "bert"], "--num_attention_heads shapes a fresh BudgetBert and does not apply to"),
        (["--max_position_embeddings", "32"], "--max_position_embeddings allows 32 positions and the --dataset_path"),
    ],
)
def test_a_flag_that_cannot_act_is_an_error_naming_both(prepared_data, tmp_path, extra, message):
    problems = problems_of(tiny_argv(prepared_data, tmp_path, *extra))
    assert any(message in problem for problem in problems), problems


def test_do_validation_without_a_validation_split_is_an_error(prepared_data, tmp_path):
    data = tmp_path / "no_validation"
    shutil.copytree(prepared_data.dataset, data)
    metadata = json.loads((data / METADATA_NAME).read_text())
    (data / METADATA_NAME).write_text(json.dumps({**metadata, "validation_examples": 0}))
    argv = ["--dataset_path", data, "--output_dir", tmp_path / "out", *TINY_MODEL_FLAGS, "--do_validation"]
    assert problems_of(argv) == [
        f"--do_validation: --dataset_path {data} has no validation split (prepared with --validation_proportion 0): "
        "prepare it with one, or drop --do_validation"
    ]
    raw = ["--train_file", prepared_data.corpus, "--tokenizer_name", prepared_data.tokenizer, "--output_dir",
           tmp_path / "out", "--validation_proportion", "0", "--do_validation"]
    assert any(p.startswith("--do_validation with --validation_proportion 0") for p in problems_of(raw))


def test_missing_data_is_one_line_naming_the_flag(tmp_path):
    assert problems_of(["--output_dir", tmp_path, "--total_training_time", "1"]) == [
        "no training data: give --dataset_path (from prepare_data.py), --train_file or --dataset_name"
    ]
    nowhere = tmp_path / "nowhere"
    assert problems_of(["--dataset_path", nowhere, "--output_dir", tmp_path]) == [
        f"--dataset_path {nowhere}: no such folder; prepare it with prepare_data.py --output_dir {nowhere}"
    ]


def test_step_schedule_keeps_max_steps(prepared_data, tmp_path):
    argv = tiny_argv(prepared_data, tmp_path, "--lr_schedule", "step", "--max_steps", "7", "--lr_scheduler_type",
                     "linear")
    args = parse_pretraining_args(argv)
    assert args.training.max_steps == 7 and args.training.lr_scheduler_type == "linear"


def test_time_schedule_refuses_max_steps(prepared_data, tmp_path):
    assert any("drop --max_steps" in p for p in problems_of(tiny_argv(prepared_data, tmp_path, "--max_steps", "10")))


def test_deepspeed_file_is_checked(prepared_data, tmp_path):
    broken = tmp_path / "ds.json"
    broken.write_text("{not json")
    argv = seed_argv(prepared_data, tmp_path)
    argv.insert(argv.index("--deepspeed") + 1, str(broken))
    assert any("is not valid JSON" in p for p in problems_of(argv))


def test_deepspeed_file_is_used(prepared_data, tmp_path):
    argv = seed_argv(prepared_data, tmp_path)
    argv.insert(argv.index("--deepspeed") + 1, str(REPO / "ds_configs" / "zero1.json"))
    assert parse_pretraining_args(argv).training.deepspeed == str(REPO / "ds_configs" / "zero1.json")


@pytest.mark.parametrize("stage", [0, 1, 2, 3])
def test_shipped_deepspeed_configs_match_the_builder(stage):
    shipped = json.loads((REPO / "ds_configs" / f"zero{stage}.json").read_text())
    assert shipped == deepspeed_config_from_flags(stage)
    assert "optimizer" not in shipped and "scheduler" not in shipped


def test_apex_is_refused_with_the_fix(prepared_data, tmp_path):
    problems = problems_of(seed_argv(prepared_data, tmp_path) + ["--fp16_backend", "apex"])
    assert any("apex is not supported" in p for p in problems)


def test_help_documents_every_flag():
    parser = build_parser()
    undocumented = [a.option_strings for a in parser._actions if a.option_strings and not a.help]
    assert undocumented == []
    text = parser.format_help()
    for token in [*SEED_COMMAND, "--config_name", "--config_overrides"]:
        if token.startswith("--"):
            assert token in text, token


@pytest.mark.parametrize("flag", ["--hub_strategy", "--hub_revision"])
def test_trainer_push_flags_that_would_be_ignored_are_refused(prepared_data, tmp_path, flag):
    problems = problems_of(seed_argv(prepared_data, tmp_path) + [flag, "checkpoint"])
    assert any(f"{flag} configures the Trainer's own push" in p for p in problems)


# --- any masked LM: --config_name, --model_type, --config_overrides -------------------------------------------------


def test_config_name_and_overrides_build_any_masked_lm(prepared_data, tmp_path):
    BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64).save_pretrained(
        tmp_path / "bert"
    )
    argv = ["--dataset_path", prepared_data.dataset, "--output_dir", tmp_path / "out"]
    bert = parse_pretraining_args([*map(str, argv), "--config_name", str(tmp_path / "bert" / "config.json"),
                                   "--config_overrides", "num_hidden_layers=2,hidden_act=relu"])
    assert isinstance(bert.model_config, BertConfig)
    assert (bert.model_config.num_hidden_layers, bert.model_config.hidden_act, bert.model_config.hidden_size) == (
        2, "relu", 32
    )
    modern = parse_pretraining_args([*map(str, argv), "--model_type", "modernbert", "--config_overrides",
                                     "hidden_size=64,num_attention_heads=2,intermediate_size=96"])
    assert isinstance(modern.model_config, ModernBertConfig) and modern.model_config.hidden_size == 64
    budget = parse_pretraining_args(tiny_argv(prepared_data, tmp_path, "--config_overrides", "layer_norm_type=rmsnorm"))
    assert isinstance(budget.model_config, BudgetBertConfig) and budget.model_config.layer_norm_type == "rmsnorm"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--config_overrides", "no_such_field=1"], "--config_overrides no_such_field=1: key no_such_field isn't"),
        (["--config_overrides", "num_attention_heads=abc"], "--config_overrides num_attention_heads=abc: invalid"),
        (["--config_overrides", "num_attention_heads=5"], "--config_overrides num_attention_heads=5"),
        (["--model_name_or_path", "ckpt", "--config_overrides", "hidden_size=8"],
         "--config_overrides and --model_name_or_path"),
        (["--config_name", "missing.json"], "--config_name missing.json: cannot be read as a model config"),
        (["--classifier_pooling", "max"], "--classifier_pooling must be one of ('cls', 'mean'), got 'max'"),
        (["--classifier_head", "mlp"], "--classifier_head must be one of ('pooler', 'lm_head'), got 'mlp'"),
    ],
)
def test_config_problems_name_the_flag(prepared_data, tmp_path, extra, message):
    argv = ["--dataset_path", prepared_data.dataset, "--output_dir", tmp_path / "out", *extra]
    problems = problems_of(argv)
    assert any(message in problem for problem in problems), problems


def test_a_config_whose_model_does_not_build_is_refused_at_parse_time(prepared_data, tmp_path):
    BertConfig(hidden_size=30, num_attention_heads=4).save_pretrained(tmp_path / "bert")
    argv = ["--dataset_path", prepared_data.dataset, "--output_dir", tmp_path / "out", "--config_name",
            tmp_path / "bert"]
    (problem,) = problems_of(argv)
    assert problem.startswith(f"--config_name {tmp_path / 'bert'}: the model cannot be built from this config")


# --- every budget flag acts -------------------------------------------------------------------------------------


def stop_seconds(args) -> float:
    """Budget seconds at which the budget callback stops a run that takes one step a minute."""
    time, clock, callbacks = started(args)
    (budget,) = [c for c in callbacks if isinstance(c, BudgetCallback)]
    control = TrainerControl()
    while not control.should_training_stop:
        time.advance(60)
        budget.on_optimizer_step(None, TrainerState(), control)
    return clock.elapsed


def started(args):
    time = ManualTime()
    clock = BudgetClock(args.budget.budget_seconds, time_fn=time)
    clock.start()
    return time, clock, build_budget_callbacks(clock, args.budget, shard_steps=1, run_arguments={})


def keeps_cpu_memory(args) -> bool:
    """Whether the run would keep freed memory in the process (the allocator itself left alone)."""
    with mock.patch("budget_bert.pretraining.build.keep_freed_memory", return_value=True) as keep:
        return keep_cpu_memory_if_asked(args) and keep.called


def one(callbacks, kind):
    found = [c for c in callbacks if isinstance(c, kind)]
    return found[0] if found else None


def lr_factors(args) -> list[float] | None:
    """The time-based LR factor at a few shares of the budget (`None`: no time-based LR)."""
    time, clock, callbacks = started(args)
    lr = one(callbacks, TimeBasedLRCallback)
    if lr is None:
        return None
    factors = []
    for share in (0.02, 0.5, 0.9):
        time.advance(share * clock.budget_seconds - clock.elapsed)
        clock.tick()
        factors.append(round(lr.factor(), 6))
    return factors


def validation_intervals(args) -> list[int] | None:
    """Shards between validations at the start, middle and end of the budget (`None`: no validation)."""
    validation = one(started(args)[2], ValidationScheduleCallback)
    return None if validation is None else [validation.shards_between_validations(f) for f in (0.03, 0.5, 0.995)]


def stops_on_eval(args) -> tuple[bool, ...]:
    """Whether an evaluation stops the run, for a few (minutes of budget, eval loss) pairs."""
    decisions = []
    for minutes, eval_loss in ((100, 6.5), (200, 6.5), (200, 5.5)):
        time, clock, callbacks = started(args)
        time.advance(minutes * 60)
        clock.tick()
        control = TrainerControl()
        stopping = one(callbacks, BudgetEarlyStoppingCallback)
        stopping.on_evaluate(None, TrainerState(), control, metrics={"eval_loss": eval_loss})
        decisions.append(control.should_training_stop)
    return tuple(decisions)


def checkpoint_every(args) -> int | None:
    checkpoints = one(started(args)[2], ShardCheckpointCallback)
    return None if checkpoints is None else checkpoints.num_epochs_between_checkpoints


def resumes(args) -> bool:
    return args.training.resume_from_checkpoint is not None


def write_schedule_record(tmp_path) -> str:
    """A recorded schedule that any tiny run may replay (its record holds no flags or conditions to compare)."""
    record = ScheduleRecord(elapsed_ticks=[0, 1_000_000], runs=[{"start_step": 0, "budget_seconds": 86400.0,
                                                                  "schedule": {}, "conditions": {}}])
    return str(record.save(tmp_path))


# Each BudgetArguments flag: flags given with it (beyond a 24-hour tiny run), and the effect that proves it acts.
PUSH = ("--push_to_hub", "--hub_model_id", "me/run")
BUDGET_FLAG_EFFECTS = {
    "total_training_time": ((), stop_seconds),
    "early_exit_time_marker": ((), stop_seconds),
    "lr_schedule": (("--lr_schedule", "step"), lr_factors),
    "curve": (("--curve", "exp"), lr_factors),
    "decay_rate": (("--curve", "exp"), lr_factors),
    "decay_step": (("--curve", "exp", "--decay_rate", "0.5"), lr_factors),
    "warmup_proportion": ((), lr_factors),
    "cooldown_proportion": (("--curve", "wsd"), lr_factors),
    "cooldown_shape": (("--curve", "wsd"), lr_factors),
    "do_validation": ((), validation_intervals),
    "validation_epochs": (("--do_validation",), validation_intervals),
    "validation_epochs_begin": (("--do_validation",), validation_intervals),
    "validation_epochs_end": (("--do_validation",), validation_intervals),
    "validation_begin_proportion": (("--do_validation",), validation_intervals),
    "validation_end_proportion": (("--do_validation",), validation_intervals),
    "use_early_stopping": (("--do_validation",), stops_on_eval),
    "early_stop_time": (("--do_validation", "--use_early_stopping"), stops_on_eval),
    "early_stop_eval_loss": (("--do_validation", "--use_early_stopping"), stops_on_eval),
    "finetune_time_markers": ((), lambda args: one(started(args)[2], FinetuneSnapshotCallback).markers),
    "num_epochs_between_checkpoints": ((), checkpoint_every),
    "end_snapshot_name": ((), lambda args: one(started(args)[2], FinetuneSnapshotCallback).end_name),
    "overwrite_output_dir": ((), resumes),
    "project_name": ((), lambda args: os.environ.get("WANDB_PROJECT")),
    "hub_push_timeout": (PUSH, lambda args: args.budget.push_timeout(interrupted=False)),
    "hub_push_timeout_on_preemption": (PUSH, lambda args: args.budget.push_timeout(interrupted=True)),
    "replay_schedule_from": ((), lambda args: args.replay and args.replay.record.last_step),
    "reuse_cpu_memory": ((), keeps_cpu_memory),
}
BUDGET_FLAG_VALUES = {
    "total_training_time": "2", "early_exit_time_marker": "12", "lr_schedule": None, "curve": None,
    "decay_rate": "0.5", "decay_step": "6", "warmup_proportion": "0.3", "do_validation": True,
    "validation_epochs": "5", "validation_epochs_begin": "2", "validation_epochs_end": "4",
    "validation_begin_proportion": "0.01", "validation_end_proportion": "0.001", "use_early_stopping": True,
    "early_stop_time": "60", "early_stop_eval_loss": "5", "finetune_time_markers": "0.5",
    "num_epochs_between_checkpoints": "3", "overwrite_output_dir": True, "project_name": "budget-runs",
    "replay_schedule_from": write_schedule_record,  # a value written in the test's folder
    "hub_push_timeout": "7", "hub_push_timeout_on_preemption": "3", "cooldown_proportion": "0.5",
    "cooldown_shape": "cosine", "end_snapshot_name": "final", "reuse_cpu_memory": "false",
}


def test_the_table_below_covers_every_budget_flag():
    assert set(BUDGET_FLAG_EFFECTS) == {f.name for f in dataclasses.fields(BudgetArguments)} == set(BUDGET_FLAG_VALUES)


@pytest.mark.parametrize("flag", sorted(BUDGET_FLAG_EFFECTS))
def test_each_budget_flag_acts(flag, prepared_data, tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_PROJECT", raising=False)
    context, effect = BUDGET_FLAG_EFFECTS[flag]
    checkpoint = tmp_path / "out" / "checkpoint-3"  # for --overwrite_output_dir to start afresh over
    checkpoint.mkdir(parents=True)
    (checkpoint / "trainer_state.json").write_text("{}")
    mark_complete(checkpoint, 3)
    base = tiny_argv(prepared_data, tmp_path, "--total_training_time", "24", *context)
    # Flags whose value is the context's choice (--lr_schedule step, --curve exp) compare against the default.
    given = [] if BUDGET_FLAG_VALUES[flag] is None else [f"--{flag}"]
    if isinstance(BUDGET_FLAG_VALUES[flag], str):
        given.append(BUDGET_FLAG_VALUES[flag])
    elif callable(BUDGET_FLAG_VALUES[flag]):
        given.append(BUDGET_FLAG_VALUES[flag](tmp_path))
    without = [token for token in base if token not in ("--lr_schedule", "step", "--curve", "exp")
               ] if BUDGET_FLAG_VALUES[flag] is None else base
    default = effect(parse_pretraining_args(without))
    monkeypatch.delenv("WANDB_PROJECT", raising=False)
    changed = effect(parse_pretraining_args(base + given))
    assert changed != default, (flag, default, changed)
    if isinstance(default, float):
        assert math.isfinite(default)
