"""Checking, before training starts, that `--output_dir` can take the run's checkpoints."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import torch


# AdamW keeps two moments per parameter, each the size of the fp32 weights.
_CHECKPOINT_COPIES_OF_WEIGHTS = 3


def checkpoint_bytes(model: torch.nn.Module) -> int:
    """A training checkpoint's size: the weights plus AdamW's two moments, in fp32."""
    return _CHECKPOINT_COPIES_OF_WEIGHTS * sum(p.numel() * 4 for p in model.parameters())


def check_output_dir(output_dir: str | os.PathLike, needed_bytes: int) -> None:
    """
    Refuse, with one line naming the folder and the fix, an `output_dir` that cannot be created or written, or whose
    disk has less than `needed_bytes` free. Give twice a checkpoint's size: a new checkpoint is written before the
    previous one may be deleted.
    """
    output_dir = Path(output_dir)
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=output_dir, prefix=".write-test-") as probe:
            probe.write(b"0")
            probe.flush()
            os.fsync(probe.fileno())
    except OSError as error:
        raise ValueError(
            f"--output_dir {output_dir} is not writable ({error.strerror or error}): fix its permissions or choose "
            "another --output_dir."
        ) from None
    free = shutil.disk_usage(output_dir).free
    if free < needed_bytes:
        raise ValueError(
            f"--output_dir {output_dir} has {free / 2**30:.3g} GiB free, and checkpoints need about "
            f"{needed_bytes / 2**30:.3g} GiB (two of them while one replaces the other): free space or choose "
            "another --output_dir."
        )
