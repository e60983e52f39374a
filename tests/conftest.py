"""Test-wide setup: small thread counts, no Hub, and no state leaking from one Trainer test to the next."""

import logging
import os
import sys

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# One thread: on a loaded 2-core machine two OpenMP threads per process made tiny steps 50x slower.
os.environ.setdefault("OMP_NUM_THREADS", "1")

_PROJECT_LOGGERS = ("budget_bert", "trainer_callbacks")


@pytest.fixture(autouse=True)
def _isolated_global_state():
    # An Accelerator with a DeepSpeed plugin exports ACCELERATE_USE_DEEPSPEED (and DeepSpeed tests set RANK & co.):
    # left behind, they turn the next test's plain Trainer, or a script it starts, into a DeepSpeed one.
    environment = dict(os.environ)
    # Scripts run in-process (run_glue.main, run_mlm.main) set the project's logger levels for their run.
    levels = {name: logging.getLogger(name).level for name in _PROJECT_LOGGERS}
    yield
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)
    os.environ.clear()
    os.environ.update(environment)
    from accelerate.state import AcceleratorState
    from transformers.integrations.deepspeed import unset_hf_deepspeed_config

    unset_hf_deepspeed_config()
    AcceleratorState._reset_state(reset_partial_state=True)
    groups = sys.modules.get("deepspeed.utils.groups")
    if groups is not None:
        # DeepSpeed keeps its clone of the world group across runs: after a test's destroy_process_group, the next
        # in-process DeepSpeed run would broadcast over the destroyed one ("Group ... is not registered").
        groups._WORLD_GROUP = None
