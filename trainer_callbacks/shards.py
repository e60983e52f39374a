"""Shards as units of training: the seed's 'epoch' is one shard of the prepared data, a fixed number of steps."""


def check_steps_per_shard(steps_per_shard: int) -> None:
    """Refuse a shard length that is not a positive whole number of optimizer steps."""
    if not (isinstance(steps_per_shard, int) and steps_per_shard >= 1):
        raise ValueError(
            f"steps_per_shard must be a whole number of optimizer steps >= 1 (got {steps_per_shard!r}): one shard "
            "of the prepared data divided by the global batch size (rounded down, at least 1)."
        )


def completed_shards(global_step: int, steps_per_shard: int) -> int | None:
    """The number of shards completed when `global_step` ends one, else `None` (mid-shard or before the first)."""
    if global_step <= 0 or global_step % steps_per_shard:
        return None
    return global_step // steps_per_shard
