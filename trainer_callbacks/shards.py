"""Shards as units of training: the seed's 'epoch' is one shard of the prepared data, a fixed number of steps."""


def completed_shards(global_step: int, steps_per_shard: int) -> int | None:
    """The number of shards completed when `global_step` ends one, else `None` (mid-shard or before the first)."""
    if global_step <= 0 or global_step % steps_per_shard:
        return None
    return global_step // steps_per_shard
