"""Test-wide setup: small thread counts, no Hub, and no state leaking from one Trainer test to the next."""

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("OMP_NUM_THREADS", "2")

# TrainingArguments with a DeepSpeed config exports these for accelerate; left behind, they turn the next test's
# plain Trainer into a DeepSpeed one.
_ACCELERATE_ENV = ("ACCELERATE_USE_DEEPSPEED", "ACCELERATE_MIXED_PRECISION", "ACCELERATE_DEEPSPEED_ZERO_STAGE")


@pytest.fixture(autouse=True)
def _isolated_accelerate_state(monkeypatch):
    for name in _ACCELERATE_ENV:
        monkeypatch.delenv(name, raising=False)
    yield
    from accelerate.state import AcceleratorState
    from transformers.integrations.deepspeed import unset_hf_deepspeed_config

    unset_hf_deepspeed_config()
    AcceleratorState._reset_state(reset_partial_state=True)
