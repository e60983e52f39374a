import math

import pytest

from trainer_callbacks.lr_curves import lr_factor


@pytest.mark.parametrize(
    "progress, expected",
    [(0.0, 0.0), (0.05, 0.5), (0.1, 1.0), (0.55, 0.5), (1.0, 0.0), (1.7, 0.0), (-0.2, 0.0)],
)
def test_linear_warmup_then_decay_to_zero(progress, expected):
    assert lr_factor(progress, 0.1, "linear") == pytest.approx(expected)


@pytest.mark.parametrize("progress, expected", [(0.0, 0.0), (0.05, 0.25), (0.1, 1.0)])
def test_exp_warmup_is_quadratic(progress, expected):
    assert lr_factor(progress, 0.1, "exp") == pytest.approx(expected)


def test_exp_decay_multiplies_by_rate_per_interval():
    assert lr_factor(0.1 + 0.2, 0.1, "exp", decay_rate=0.5, decay_interval=0.1) == pytest.approx(0.25)
    past_end = lr_factor(3.0, 0.1, "exp", decay_rate=0.5, decay_interval=0.1)
    assert past_end == pytest.approx(lr_factor(1.0, 0.1, "exp", decay_rate=0.5, decay_interval=0.1))
    assert past_end == pytest.approx(0.5**9)


def test_seed_defaults_barely_decay():
    # The seed's --decay_rate 0.99 --decay_step 1000 (hours) over a 24 h budget.
    end = lr_factor(1.0, 0.06, "exp", decay_rate=0.99, decay_interval=1000 / 24)
    assert end == pytest.approx(0.99 ** (0.94 * 24 / 1000)) and end > 0.9997


@pytest.mark.parametrize("curve", ["linear", "exp"])
def test_continuous_at_end_of_warmup_and_monotone(curve):
    values = [lr_factor(i / 1000, 0.06, curve, decay_rate=0.1, decay_interval=0.5) for i in range(1001)]
    peak = values.index(max(values))
    assert values[peak] == pytest.approx(1.0) and peak == 60
    assert all(a <= b for a, b in zip(values[:peak], values[1 : peak + 1]))
    assert all(a >= b for a, b in zip(values[peak:], values[peak + 1 :]))
    assert all(math.isclose(a, b, abs_tol=0.05) for a, b in zip(values, values[1:]))


def test_no_warmup():
    assert lr_factor(0.0, 0.0, "linear") == 1.0
    assert lr_factor(0.0, 0.0, "exp") == 1.0


def test_unknown_curve_names_the_flag():
    with pytest.raises(ValueError, match="--curve"):
        lr_factor(0.5, 0.1, "cosine")
