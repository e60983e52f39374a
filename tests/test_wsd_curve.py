"""The warmup-stable-decay time curve: its factor by budget used for each cooldown shape, and inside the Trainer."""

import json
import math

import pytest

from test_callbacks_trainer import (
    BUDGET,
    LEARNING_RATE,
    SECONDS_PER_STEP,
    AdvanceTime,
    applied_per_step,
    logged,
    make_trainer,
)
from trainer_callbacks import (
    BudgetCallback,
    BudgetClock,
    ManualTime,
    ShardCheckpointCallback,
    TimeBasedLRCallback,
)
from trainer_callbacks.lr_curves import COOLDOWN_SHAPES, cooldown_factor, lr_factor

WARMUP, COOLDOWN = 0.1, 0.3


def wsd(progress, shape):
    return lr_factor(progress, WARMUP, "wsd", cooldown_proportion=COOLDOWN, cooldown_shape=shape)


@pytest.mark.parametrize(
    "shape, halfway",  # the factor halfway through the cooldown
    [("linear", 0.5), ("1-sqrt", 1 - math.sqrt(0.5)), ("cosine", 0.5)],
)
def test_warmup_then_peak_then_cooldown_to_zero(shape, halfway):
    assert wsd(0.0, shape) == 0.0
    assert wsd(0.05, shape) == pytest.approx(0.5)  # linear warmup
    assert [wsd(p, shape) for p in (0.1, 0.4, 0.7)] == [1.0, 1.0, 1.0]  # the stable phase, up to 1 - cooldown
    assert wsd(0.85, shape) == pytest.approx(halfway)
    assert wsd(1.0, shape) == pytest.approx(0.0, abs=1e-12)
    assert wsd(1.5, shape) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize(
    "shape, quarter",  # the factor a quarter of the way through the cooldown tells the shapes apart
    [("linear", 0.75), ("1-sqrt", 0.5), ("cosine", (1 + math.cos(math.pi / 4)) / 2)],
)
def test_cooldown_shapes(shape, quarter):
    assert cooldown_factor(0.0, shape) == 1.0
    assert cooldown_factor(0.25, shape) == pytest.approx(quarter)
    assert cooldown_factor(1.0, shape) == pytest.approx(0.0, abs=1e-12)
    values = [cooldown_factor(i / 100, shape) for i in range(101)]
    assert all(a >= b for a, b in zip(values, values[1:]))


@pytest.mark.parametrize("shape", COOLDOWN_SHAPES)
def test_a_constant_phase_point_starts_the_cooldown_of_a_shorter_budget(shape):
    # t = 0.6 of the budget lies in the stable phase; cooled down with the same share, its budget is t / (1 - c).
    t = 0.6
    shorter = t / (1 - COOLDOWN)
    for extra in (0.0, 0.05, 0.1, 0.2, t * COOLDOWN / (1 - COOLDOWN)):
        expected = cooldown_factor(extra / (shorter * COOLDOWN), shape)
        assert wsd((t + extra) / shorter, shape) == pytest.approx(expected)


def test_unknown_shape_and_curve_name_their_flag():
    with pytest.raises(ValueError, match="--cooldown_shape"):
        lr_factor(0.9, 0.1, "wsd", cooldown_shape="square")
    with pytest.raises(ValueError, match="--curve"):
        lr_factor(0.9, 0.1, "cosine")


def expected_wsd_lr(step, shape, elapsed_before=0.0, first_step=1):
    """The rate of `step`: the factor at the budget used when the previous step ended (7 s a step)."""
    elapsed = elapsed_before + SECONDS_PER_STEP * (step - first_step)
    return LEARNING_RATE * wsd(elapsed / BUDGET, shape)


def wsd_callbacks(time, clock, shape):
    return [
        BudgetCallback(clock),
        TimeBasedLRCallback(clock, WARMUP, "wsd", cooldown_proportion=COOLDOWN, cooldown_shape=shape),
        AdvanceTime(time),
    ]


@pytest.mark.parametrize("shape", COOLDOWN_SHAPES)
def test_trainer_applies_and_logs_the_wsd_rate_by_elapsed_time(tmp_path, shape):
    time = ManualTime()
    clock = BudgetClock(BUDGET, time_fn=time)
    applied = []
    trainer = make_trainer(tmp_path, wsd_callbacks(time, clock, shape), applied=applied)
    trainer.train()
    steps = range(1, trainer.state.global_step + 1)
    rates = applied_per_step(applied, len(steps))
    assert rates == [logged(trainer, "learning_rate")[step] for step in steps]
    assert rates == pytest.approx([expected_wsd_lr(step, shape) for step in steps])
    assert rates.count(LEARNING_RATE) >= 8  # steps 3-11 start between 10% and 70% of the budget


def test_resume_in_the_middle_of_the_cooldown_continues_the_curve(tmp_path):
    shape, checkpoint_step = "1-sqrt", 12  # 12 steps of 7 s: 84% of the budget, inside the cooldown (from 70%)
    time = ManualTime()
    clock = BudgetClock(BUDGET, time_fn=time)
    first = make_trainer(
        tmp_path, wsd_callbacks(time, clock, shape) + [ShardCheckpointCallback(1, checkpoint_step)],
        max_steps=checkpoint_step + 1,
    )
    first.train()
    saved = json.loads((tmp_path / f"checkpoint-{checkpoint_step}" / "trainer_state.json").read_text())
    assert BudgetCallback.saved_clock(saved).fraction == pytest.approx(checkpoint_step * SECONDS_PER_STEP / BUDGET)

    time = ManualTime(3000.0)  # a new process, another time origin
    clock = BudgetClock(BUDGET, time_fn=time)
    applied = []
    second = make_trainer(tmp_path, wsd_callbacks(time, clock, shape), applied=applied)
    second.train(resume_from_checkpoint=str(tmp_path / f"checkpoint-{checkpoint_step}"))
    steps = range(checkpoint_step + 1, second.state.global_step + 1)
    elapsed_before = checkpoint_step * SECONDS_PER_STEP
    rates = applied_per_step(applied, len(steps))
    assert rates == pytest.approx(
        [expected_wsd_lr(step, shape, elapsed_before, checkpoint_step + 1) for step in steps]
    )
    assert 0 < rates[0] < LEARNING_RATE and rates == sorted(rates, reverse=True)
