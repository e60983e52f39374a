"""The time-based learning-rate curve: a pure function of the fraction of the budget used."""

CURVES = ("linear", "exp")


def lr_factor(
    progress: float,
    warmup_proportion: float,
    curve: str = "linear",
    *,
    decay_rate: float = 0.99,
    decay_interval: float = 1.0,
) -> float:
    """
    Multiplier of the peak learning rate after `progress` of the budget, as in academic-budget-bert's time-based
    schedule (`--lr_schedule time`, `pretraining/schedules.py`), with time expressed as a fraction of the budget.

    With `p = min(max(progress, 0), 1)` and `w = warmup_proportion`:

    - `"linear"`: `p / w` while `p < w` (warmup from 0), then `(1 - p) / (1 - w)`: 1 at the end of the warmup, 0 at
      the end of the budget.
    - `"exp"`: `(p / w) ** 2` while `p < w`, then `decay_rate ** ((p - w) / decay_interval)`: the rate is multiplied
      by `decay_rate` every `decay_interval` of the budget.

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
        curve (`str`, *optional*, defaults to `"linear"`): `"linear"` or `"exp"`.
        decay_rate (`float`, *optional*, defaults to 0.99): Exp curve only: multiplier per `decay_interval`, in
            `(0, 1]`.
        decay_interval (`float`, *optional*, defaults to 1.0): Exp curve only: fraction of the budget per
            `decay_rate` multiplication, > 0.

    Returns:
        `float`: the factor, in `[0, 1]`.
    """
    problems = []
    if curve not in CURVES:
        problems.append(f"--curve must be one of {', '.join(CURVES)} (got {curve!r})")
    if not 0 <= warmup_proportion < 1:
        problems.append(f"--warmup_proportion must be in [0, 1) (got {warmup_proportion})")
    if curve == "exp":
        if not 0 < decay_rate <= 1:
            problems.append(f"--decay_rate must be in (0, 1] (got {decay_rate})")
        if not decay_interval > 0:
            problems.append(f"--decay_step must be > 0 (got a decay interval of {decay_interval} of the budget)")
    if problems:
        raise ValueError("Invalid time-based learning-rate schedule: " + "; ".join(problems))

    p = min(max(progress, 0.0), 1.0)
    w = warmup_proportion
    if p < w:
        return p / w if curve == "linear" else (p / w) ** 2
    if curve == "linear":
        return (1.0 - p) / (1.0 - w)
    return decay_rate ** ((p - w) / decay_interval)
