"""The budget callbacks inside the stock Trainer: a tiny BERT, tiny random data, and a clock that moves 7 s a step."""

import json
import math

import pytest
import torch

from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    BertConfig,
    BertForMaskedLM,
    BertTokenizerFast,
    ProgressCallback,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)

from pretraining_fixtures import one_process_env
from trainer_callbacks import (
    BudgetCallback,
    BudgetClock,
    BudgetEarlyStoppingCallback,
    BudgetProgressCallback,
    FinetuneSnapshotCallback,
    ManualTime,
    ShardCheckpointCallback,
    SnapshotInfo,
    TimeBasedLRCallback,
    ValidationScheduleCallback,
)
from trainer_callbacks.lr_curves import lr_factor


BUDGET = 100.0
SECONDS_PER_STEP = 7.0
LEARNING_RATE = 0.1
WARMUP = 0.1
SEQ_LEN = 8
BATCH = 2
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(27)]


class RandomMLMData(torch.utils.data.Dataset):
    """Fixed random token sequences with every third token to predict."""

    def __init__(self, size: int, seed: int = 0):
        generator = torch.Generator().manual_seed(seed)
        self.input_ids = torch.randint(5, len(VOCAB), (size, SEQ_LEN), generator=generator)

    def __len__(self):
        return len(self.input_ids)

    def __getitem__(self, i):
        labels = self.input_ids[i].clone()
        labels[torch.arange(SEQ_LEN) % 3 != 0] = -100
        mask = torch.ones(SEQ_LEN, dtype=torch.long)
        return {"input_ids": self.input_ids[i], "attention_mask": mask, "labels": labels}


class RecordingSGD(torch.optim.SGD):
    """SGD that records, at each call of `step`, the learning rates of the parameter groups it updates."""

    def __init__(self, params, lr, applied):
        super().__init__(params, lr=lr)
        self.applied = applied

    def step(self, closure=None):
        self.applied.append([group["lr"] for group in self.param_groups])
        return super().step(closure)


def applied_per_step(applied, steps):
    """The one rate applied at each training step, from RecordingSGD's calls.

    The Trainer steps the optimizer once per training step; DeepSpeed's ZeRO optimizer calls it once per parameter
    group, with that group alone.
    """
    rates = [lr for call in applied for lr in call]
    per_step = len(rates) // steps
    assert per_step * steps == len(rates)
    chunks = [set(rates[i * per_step : (i + 1) * per_step]) for i in range(steps)]
    assert all(len(chunk) == 1 for chunk in chunks), chunks
    return [chunk.pop() for chunk in chunks]


class AdvanceTime(TrainerCallback):
    """Makes each optimizer step take `seconds` of (manual) time."""

    def __init__(self, time: ManualTime, seconds: float = SECONDS_PER_STEP):
        self.time, self.seconds = time, seconds

    def on_step_begin(self, args, state, control, **kwargs):
        self.time.advance(self.seconds)


def tiny_tokenizer():
    return BertTokenizerFast(vocab={token: i for i, token in enumerate(VOCAB)})


def tiny_model():
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(VOCAB),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=SEQ_LEN,
    )
    return BertForMaskedLM(config)


def make_trainer(output_dir, callbacks, applied=None, eval_dataset=None, **overrides):
    """A stock Trainer on the tiny model; the budget, not max_steps, is meant to end training."""
    arguments = dict(
        output_dir=str(output_dir),
        per_device_train_batch_size=BATCH,
        per_device_eval_batch_size=BATCH,
        max_steps=1000,
        learning_rate=LEARNING_RATE,
        lr_scheduler_type="constant",
        logging_steps=1,
        save_strategy="no",
        eval_strategy="no",
        report_to="none",
        use_cpu=True,
        disable_tqdm=True,
        logging_nan_inf_filter=False,
        dataloader_num_workers=0,
        seed=0,
    )
    arguments.update(overrides)
    return Trainer(
        model=tiny_model(),
        args=TrainingArguments(**arguments),
        train_dataset=RandomMLMData(16),
        eval_dataset=eval_dataset,
        processing_class=tiny_tokenizer(),
        optimizer_cls_and_kwargs=(RecordingSGD, {"lr": LEARNING_RATE, "applied": [] if applied is None else applied}),
        callbacks=callbacks,
    )


def logged(trainer, key):
    """{step: value} of `key` in the trainer's log history."""
    return {entry["step"]: entry[key] for entry in trainer.state.log_history if key in entry}


def expected_lr(step: int, elapsed_before: float = 0.0, first_step: int = 1) -> float:
    """The rate of `step`: the factor at the budget used when the previous step ended (7 s a step)."""
    elapsed = elapsed_before + SECONDS_PER_STEP * (step - first_step)
    return LEARNING_RATE * lr_factor(elapsed / BUDGET, WARMUP, "linear")


def first_step_at_or_past(seconds: float, elapsed_before: float = 0.0, steps_before: int = 0) -> int:
    return steps_before + math.ceil((seconds - elapsed_before) / SECONDS_PER_STEP)


def budget_run_callbacks(time, clock):
    return [BudgetCallback(clock), TimeBasedLRCallback(clock, warmup_proportion=WARMUP), AdvanceTime(time)]


def test_logged_lr_is_applied_lr_and_the_budget_stops_training(tmp_path):
    time = ManualTime()
    clock = BudgetClock(BUDGET, time_fn=time)
    applied = []
    trainer = make_trainer(tmp_path, budget_run_callbacks(time, clock), applied=applied)
    trainer.train()

    last_step = first_step_at_or_past(BUDGET)
    assert trainer.state.global_step == last_step
    steps = range(1, last_step + 1)
    rates = applied_per_step(applied, len(steps))
    assert rates == [logged(trainer, "learning_rate")[step] for step in steps]
    assert rates == pytest.approx([expected_lr(step) for step in steps])
    assert rates[0] == 0.0  # a fresh run starts in warmup

    # The budget's stop saves a checkpoint that records the budget used.
    saved = json.loads((tmp_path / f"checkpoint-{last_step}" / "trainer_state.json").read_text())
    assert saved["stateful_callbacks"]["BudgetCallback"]["attributes"]["elapsed_seconds"] == pytest.approx(
        last_step * SECONDS_PER_STEP
    )


def test_early_exit_marker_stops_before_the_budget(tmp_path):
    time = ManualTime()
    clock = BudgetClock(BUDGET, time_fn=time)
    trainer = make_trainer(tmp_path, [BudgetCallback(clock, stop_after_seconds=30.0), AdvanceTime(time)])
    trainer.train()
    assert trainer.state.global_step == first_step_at_or_past(30.0)


def test_resume_continues_the_budget_lr_and_markers(tmp_path):
    shard_steps, checkpoint_shards = 1, 5
    events = []

    def record(path, info):
        assert path.name == info.name and path.is_dir()
        events.append((info.name, info.global_step))

    time = ManualTime()
    clock = BudgetClock(BUDGET, time_fn=time)
    snapshots = FinetuneSnapshotCallback(clock, markers=[0.3, 0.9], on_snapshot=record)
    first = make_trainer(
        tmp_path,
        budget_run_callbacks(time, clock) + [ShardCheckpointCallback(shard_steps, checkpoint_shards), snapshots],
        max_steps=6,
    )
    first.train()
    assert first.state.global_step == 6  # max_steps, before the budget
    marker_step = first_step_at_or_past(0.3 * BUDGET)
    assert events == [("marker-0.30", marker_step), ("end", 6)]
    assert marker_step <= checkpoint_shards  # so the checkpoint remembers that marker

    # A new process: a new clock, from another time origin, and new callbacks.
    events.clear()
    time = ManualTime(5000.0)
    clock = BudgetClock(BUDGET, time_fn=time)
    snapshots = FinetuneSnapshotCallback(clock, markers=[0.3, 0.9], on_snapshot=record)
    applied = []
    second = make_trainer(tmp_path, budget_run_callbacks(time, clock) + [snapshots], applied=applied)
    second.train(resume_from_checkpoint=str(tmp_path / f"checkpoint-{checkpoint_shards}"))

    elapsed_before = checkpoint_shards * SECONDS_PER_STEP
    last_step = first_step_at_or_past(BUDGET, elapsed_before, checkpoint_shards)
    assert second.state.global_step == last_step
    steps = range(checkpoint_shards + 1, last_step + 1)
    rates = applied_per_step(applied, len(steps))
    assert rates == pytest.approx([expected_lr(s, elapsed_before, checkpoint_shards + 1) for s in steps])
    assert rates == [logged(second, "learning_rate")[step] for step in steps]
    marker_step = first_step_at_or_past(0.9 * BUDGET, elapsed_before, checkpoint_shards)
    assert events == [("marker-0.90", marker_step), ("end", last_step)]


def hide_tokens(arguments: dict) -> dict:
    """A stand-in for the caller's redaction: hides every `token` field."""
    return {key: hide_tokens(value) if isinstance(value, dict) else "<TOKEN>" if key == "token" else value
            for key, value in arguments.items()}


def test_snapshots_load_for_finetuning_with_secrets_redacted(tmp_path):
    time = ManualTime()
    clock = BudgetClock(BUDGET, time_fn=time)
    run_arguments = {"ModelArguments": {"tokenizer_name": "tiny", "token": "hf_secret"}}
    snapshots = FinetuneSnapshotCallback(clock, markers=[0.5], run_arguments=run_arguments, redact=hide_tokens)
    trainer = make_trainer(tmp_path, budget_run_callbacks(time, clock) + [snapshots], hub_token="hf_secret")
    trainer.train()

    root = tmp_path / "finetune_snapshots"
    assert sorted(p.name for p in root.iterdir()) == ["end", "marker-0.50"]
    for folder in root.iterdir():
        model = AutoModelForSequenceClassification.from_pretrained(folder, num_labels=2)
        assert model.config.vocab_size == len(VOCAB)
        assert len(AutoTokenizer.from_pretrained(folder)) == len(VOCAB)
        assert any(folder.glob("*.safetensors"))
        text = (folder / "run_arguments.json").read_text()
        assert "hf_secret" not in text
        arguments = json.loads(text)
        assert arguments["ModelArguments"] == {"tokenizer_name": "tiny", "token": "<TOKEN>"}
        assert arguments["TrainingArguments"]["hub_token"] == "<HUB_TOKEN>"
        assert arguments["TrainingArguments"]["learning_rate"] == LEARNING_RATE
    info = SnapshotInfo.load(root / "marker-0.50")
    assert info.global_step == first_step_at_or_past(0.5 * BUDGET)
    assert info.budget_fraction >= 0.5 and info.budget_seconds == BUDGET


def test_validation_schedule_and_final_evaluation(tmp_path):
    time = ManualTime()
    clock = BudgetClock(BUDGET, time_fn=time)
    validation = ValidationScheduleCallback(
        clock,
        steps_per_shard=2,
        validation_epochs=3,
        validation_epochs_begin=1,
        validation_epochs_end=1,
        validation_begin_proportion=0.2,
        validation_end_proportion=0.2,
    )
    trainer = make_trainer(tmp_path, budget_run_callbacks(time, clock) + [validation], eval_dataset=RandomMLMData(4, 1))
    trainer.train()
    # Shards end at even steps; the budget used at step s is 7s %. Start (< 20 %): every shard (step 2); middle:
    # every 3rd shard (step 6); end (> 80 %): every shard (steps 12, 14); and when the budget stops it (step 15).
    assert sorted(logged(trainer, "eval_loss")) == [2, 6, 12, 14, 15]


def test_eval_loss_too_high_after_early_stop_time_stops(tmp_path):
    time = ManualTime()
    clock = BudgetClock(BUDGET, time_fn=time)
    validation = ValidationScheduleCallback(clock, steps_per_shard=2, validation_epochs=1)
    stopping = BudgetEarlyStoppingCallback(clock, after_seconds=30.0, max_eval_loss=0.1)
    trainer = make_trainer(
        tmp_path, budget_run_callbacks(time, clock) + [validation, stopping], eval_dataset=RandomMLMData(4, 1)
    )
    trainer.train()
    # The first evaluation at or after 30 s of budget: the first shard end (even step) at or past it.
    first_check = first_step_at_or_past(30.0)
    first_check += first_check % 2
    assert trainer.state.global_step == first_check
    assert sorted(logged(trainer, "eval_loss")) == list(range(2, first_check + 1, 2))


class PoisonWeights(TrainerCallback):
    """Turns the weights to NaN at the end of `step`, as a diverging run would."""

    def __init__(self, step):
        self.step = step

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step == self.step:
            with torch.no_grad():
                for parameter in model.parameters():
                    parameter.fill_(float("nan"))


def test_nan_loss_stops_and_saves(tmp_path):
    time = ManualTime()
    clock = BudgetClock(BUDGET, time_fn=time)
    callbacks = budget_run_callbacks(time, clock) + [BudgetEarlyStoppingCallback(clock), PoisonWeights(3)]
    trainer = make_trainer(tmp_path, callbacks)
    trainer.train()
    assert trainer.state.global_step == 4
    assert math.isnan(logged(trainer, "loss")[4])
    assert (tmp_path / "checkpoint-4").is_dir()


def test_nan_filter_that_would_hide_divergence_is_refused(tmp_path):
    clock = BudgetClock(BUDGET, time_fn=ManualTime())
    callbacks = [BudgetCallback(clock), BudgetEarlyStoppingCallback(clock)]
    trainer = make_trainer(tmp_path, callbacks, logging_nan_inf_filter=True)
    with pytest.raises(ValueError, match="--logging_nan_inf_filter false"):
        trainer.train()


def test_time_based_lr_refuses_other_scheduler_types(tmp_path):
    clock = BudgetClock(BUDGET, time_fn=ManualTime())
    trainer = make_trainer(tmp_path, [BudgetCallback(clock), TimeBasedLRCallback(clock)], lr_scheduler_type="linear")
    with pytest.raises(ValueError, match="--lr_scheduler_type is linear: use constant"):
        trainer.train()


def test_callback_state_reinstantiation_is_refused(tmp_path):
    clock = BudgetClock(BUDGET, time_fn=ManualTime())
    with pytest.raises(ValueError, match="--restore_callback_states_from_checkpoint"):
        make_trainer(tmp_path, [BudgetCallback(clock)], restore_callback_states_from_checkpoint=True)


class RecordLogs(TrainerCallback):
    def __init__(self):
        self.logs = []

    def on_log(self, args, state, control, logs=None, **kwargs):
        self.logs.append(dict(logs))


def test_budget_progress_replaces_the_step_bar_and_adds_log_keys(tmp_path):
    time = ManualTime()
    clock = BudgetClock(BUDGET, time_fn=time)
    trainer = make_trainer(
        tmp_path, budget_run_callbacks(time, clock), disable_tqdm=False, include_num_input_tokens_seen="all"
    )
    trainer.remove_callback(ProgressCallback)
    progress, recorder = BudgetProgressCallback(clock), RecordLogs()
    trainer.add_callback(progress)
    trainer.add_callback(recorder)
    assert [type(cb) for cb in trainer.callback_handler.callbacks].count(BudgetProgressCallback) == 1
    assert not any(type(cb) is ProgressCallback for cb in trainer.callback_handler.callbacks)
    trainer.train()

    training_logs = [logs for logs in recorder.logs if "loss" in logs]
    assert len(training_logs) == trainer.state.global_step
    for step, logs in enumerate(training_logs, start=1):
        assert logs["budget_elapsed_hours"] == pytest.approx(step * SECONDS_PER_STEP / 3600)
        assert logs["budget_fraction"] == pytest.approx(step * SECONDS_PER_STEP / BUDGET)
        assert logs["tokens_per_second"] == pytest.approx(BATCH * SEQ_LEN / SECONDS_PER_STEP)
    assert logged(trainer, "budget_fraction") == {
        step: pytest.approx(step * SECONDS_PER_STEP / BUDGET) for step in range(1, trainer.state.global_step + 1)
    }
    assert progress.training_bar is None  # closed at train end


def test_real_clock_budget_stops_training(tmp_path):
    clock = BudgetClock(1.0)
    trainer = make_trainer(tmp_path, [BudgetCallback(clock), TimeBasedLRCallback(clock)], max_steps=10**6)
    trainer.train()
    assert 0 < trainer.state.global_step < 10**6
    assert clock.elapsed >= 1.0
    assert (tmp_path / f"checkpoint-{trainer.state.global_step}").is_dir()


def test_deepspeed_zero1_applies_and_logs_the_time_based_lr(tmp_path, monkeypatch):
    pytest.importorskip("deepspeed")
    for name, value in one_process_env().items():
        monkeypatch.setenv(name, value)
    time = ManualTime()
    clock = BudgetClock(BUDGET, time_fn=time)
    applied = []
    deepspeed_config = {
        "train_batch_size": "auto",
        "train_micro_batch_size_per_gpu": "auto",
        "gradient_accumulation_steps": "auto",
        "zero_optimization": {"stage": 1},
    }
    try:
        trainer = make_trainer(tmp_path, budget_run_callbacks(time, clock), applied=applied, deepspeed=deepspeed_config)
        trainer.train()
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
    assert trainer.is_deepspeed_enabled
    last_step = first_step_at_or_past(BUDGET)
    assert trainer.state.global_step == last_step
    steps = range(1, last_step + 1)
    rates = applied_per_step(applied, len(steps))
    assert rates == [logged(trainer, "learning_rate")[step] for step in steps]
    assert rates == pytest.approx([expected_lr(step) for step in steps])
