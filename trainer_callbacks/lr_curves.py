"""The time-based learning-rate curves: pure functions of the fraction of the budget used."""

import math


CURVES = ("linear", "exp", "wsd")
"""The curves of [`lr_factor`]."""
COOLDOWN_SHAPES = ("linear", "1-sqrt", "cosine")
"""The shapes of the `"wsd"` curve's cooldown, see [`cooldown_factor`]."""
DEFAULT_COOLDOWN_PROPORTION = 0.2
"""The `"wsd"` curve's cooldown share of the budget by default: in Hägele et al. (2024), a cooldown over about 20%
of training matches a cosine schedule over the whole of it."""
DEFAULT_COOLDOWN_SHAPE = "1-sqrt"
"""The `"wsd"` curve's cooldown shape by default: in Hägele et al. (2024), it beats the linear cooldown consistently."""


def cooldown_factor(x: float, shape: str = DEFAULT_COOLDOWN_SHAPE) -> float:
    """
    The multiplier of the peak rate `x` of the way through a cooldown (`x` in `[0, 1]`), from 1 at `x = 0` to 0 at
    `x = 1`: `"linear"` `1 - x`, `"1-sqrt"` `1 - sqrt(x)` (falls fastest at the start, then slowly), `"cosine"`
    `(1 + cos(pi x)) / 2`.
    """
    x = min(max(x, 0.0), 1.0)
    if shape == "linear":
        return 1.0 - x
    if shape == "1-sqrt":
        return 1.0 - math.sqrt(x)
    if shape == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * x))
    raise ValueError(f"--cooldown_shape {shape}: use one of {', '.join(COOLDOWN_SHAPES)}")


def lr_factor(
    progress: float,
    warmup_proportion: float,
    curve: str = "linear",
    *,
    decay_rate: float = 0.99,
    decay_interval: float = 1.0,
    cooldown_proportion: float = DEFAULT_COOLDOWN_PROPORTION,
    cooldown_shape: str = DEFAULT_COOLDOWN_SHAPE,
) -> float:
    """
    Multiplier of the peak learning rate after `progress` of the budget, as in academic-budget-bert's time-based
    schedule (`--lr_schedule time`, `pretraining/schedules.py`), with time expressed as a fraction of the budget.

    With `p = min(max(progress, 0), 1)`, `w = warmup_proportion` and, for `"wsd"`, `c = cooldown_proportion`:

    - `"linear"`: `p / w` while `p < w` (warmup from 0), then `(1 - p) / (1 - w)`: 1 at the end of the warmup, 0 at
      the end of the budget.
    - `"exp"`: `(p / w) ** 2` while `p < w`, then `decay_rate ** ((p - w) / decay_interval)`: the rate is multiplied
      by `decay_rate` every `decay_interval` of the budget.
    - `"wsd"` (warmup-stable-decay): `p / w` while `p < w`, then 1 (the peak rate) until `1 - c`, then
      `cooldown_factor((p - (1 - c)) / c, cooldown_shape)` down to 0 at the end of the budget. Any point `t` of the
      constant phase is also the start of the cooldown of the shorter budget `t / (1 - c)`: a checkpoint taken
      there and cooled down is the model of that budget (Hägele et al. 2024, "Scaling Laws and Compute-Optimal
      Training Beyond Fixed Training Durations", https://arxiv.org/abs/2405.18392).

    Past the budget (`progress > 1`) the factor stays at its value for `progress == 1`. With `w == 0` there is no
    warmup.

    Differences from the seed, which measures time in hours: its linear decay divides by `max(1.0, total_hours -
    warmup_hours)`, so with less than an hour after the warmup the rate drops at the end of the warmup (to
    `total_hours - warmup_hours` of its peak); here the decay always runs continuously from 1 to 0. Its exp decay
    counts `--decay_step` in hours under `--lr_schedule time`, so the seed's flag maps to
    `decay_interval = decay_step / total_training_time`; with the seed's defaults (`--decay_rate 0.99
    --decay_step 1000`, 24 h) the rate ends at 0.99977 of its peak: practically constant.

    Args:
        progress (`float`): Fraction of the budget used (`BudgetClock.fraction`).
        warmup_proportion (`float`): Fraction of the budget spent warming up, in `[0, 1)`.
        curve (`str`, *optional*, defaults to `"linear"`): One of `CURVES`.
        decay_rate (`float`, *optional*, defaults to 0.99): Exp curve only: multiplier per `decay_interval`, in
            `(0, 1]`.
        decay_interval (`float`, *optional*, defaults to 1.0): Exp curve only: fraction of the budget per
            `decay_rate` multiplication, > 0.
        cooldown_proportion (`float`, *optional*, defaults to 0.2): Wsd curve only: fraction of the budget spent
            cooling down, in `(0, 1 - warmup_proportion]`.
        cooldown_shape (`str`, *optional*, defaults to `"1-sqrt"`): Wsd curve only: one of `COOLDOWN_SHAPES`.

    Returns:
        `float`: the factor, in `[0, 1]`.
    """
    p = min(max(progress, 0.0), 1.0)
    w = warmup_proportion
    if curve not in CURVES:
        raise ValueError(f"--curve {curve}: use one of {', '.join(CURVES)}")
    if p < w:
        return (p / w) ** 2 if curve == "exp" else p / w
    if curve == "linear":
        return (1.0 - p) / (1.0 - w)
    if curve == "exp":
        return decay_rate ** ((p - w) / decay_interval)
    cooldown_start = 1.0 - cooldown_proportion
    if p <= cooldown_start:
        return 1.0
    return cooldown_factor((p - cooldown_start) / cooldown_proportion, cooldown_shape)
