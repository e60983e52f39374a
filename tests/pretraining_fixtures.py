"""A tiny pretraining setup for the tests that run `run_mlm.py`, built once per test session: the demo's tiny preset.

Real English text (the docstrings of the ten standard-library modules of `python -m budget_bert.demo --tiny`, about
11k words), a 2,000-token WordPiece tokenizer trained on it, and that text prepared by `prepare_data.py`'s code into
4 shards of 64-token examples (about 280 training and a few validation examples), for the demo's tiny model
(`TINY_MODEL_FLAGS`). Building it takes a few seconds. `fake_clock` gives `run_mlm.main` a budget clock whose time
moves only as the run reads it, so a test that counts steps counts the same ones on any machine.

    from pretraining_fixtures import TINY_MODEL_FLAGS, prepared_data  # noqa: F401 - fixture

    def test_run(prepared_data, tmp_path):
        subprocess.run([sys.executable, "run_mlm.py", "--dataset_path", str(prepared_data.dataset),
                        "--output_dir", str(tmp_path), *TINY_MODEL_FLAGS, ...], cwd=REPO, check=True)

Subprocesses inherit the offline and thread settings of `tests/conftest.py` through the environment.
"""

from __future__ import annotations

import importlib.util
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from budget_bert.data.corpora import write_stdlib_corpus
from budget_bert.data.data_arguments import PrepareDataArguments
from budget_bert.data.prepare import prepare_dataset
from budget_bert.data.tokenization import train_wordpiece_tokenizer
from budget_bert.demo.pipeline import TINY_MODULES, TINY_PRESET
from trainer_callbacks import BudgetClock, ManualTime


REPO = Path(__file__).resolve().parents[1]
WAIT_SECONDS = 300  # generous: the machine running the tests may be busy

# The demo's tiny BudgetBert: several optimizer steps a second on one CPU core.
TINY_MODEL_FLAGS = (
    "--hidden_size", str(TINY_PRESET["hidden_size"]), "--num_hidden_layers", str(TINY_PRESET["num_layers"]),
    "--num_attention_heads", str(TINY_PRESET["num_attention_heads"]),
    "--max_position_embeddings", str(TINY_PRESET["max_seq_length"]),
)


@dataclass(frozen=True)
class PreparedData:
    """What the `prepared_data` fixture built (read-only: copy anything a test wants to change).

    Attributes:
        corpus: the raw text file (blank lines between documents), for `--train_file`.
        tokenizer: the WordPiece tokenizer folder, for `--tokenizer_name`.
        dataset: the `prepare_data.py` output folder (shards, validation split, tokenizer), for `--dataset_path`.
        vocab_size: tokens in the tokenizer's vocabulary.
        max_seq_length: tokens per prepared example.
        num_shards: training shards of `dataset`.
    """

    corpus: Path
    tokenizer: Path
    dataset: Path
    vocab_size: int
    max_seq_length: int
    num_shards: int


def build_prepared_data(
    root: Path, max_seq_length: int = TINY_PRESET["max_seq_length"], num_shards: int = TINY_PRESET["num_shards"]
) -> PreparedData:
    """Write the corpus, tokenizer and prepared data under `root` (what the `prepared_data` fixture holds)."""
    corpus = write_stdlib_corpus(root / "corpus", modules=TINY_MODULES)
    tokenizer = train_wordpiece_tokenizer([corpus.path], TINY_PRESET["vocab_size"], root / "tokenizer")
    dataset = root / "prepared"
    prepare_dataset(
        PrepareDataArguments(
            train_file=[str(corpus.path)],
            tokenizer_name=str(root / "tokenizer"),
            output_dir=str(dataset),
            max_seq_length=max_seq_length,
            num_shards=num_shards,
        )
    )
    return PreparedData(corpus.path, root / "tokenizer", dataset, len(tokenizer), max_seq_length, num_shards)


_built: dict[str, PreparedData] = {}


@pytest.fixture(scope="session")
def prepared_data(tmp_path_factory) -> PreparedData:
    """The session's tiny corpus, tokenizer and prepared dataset ([`PreparedData`]), built on first use."""
    # Each test module that imports this fixture registers its own copy: the cache makes them share one build.
    if "data" not in _built:
        _built["data"] = build_prepared_data(tmp_path_factory.mktemp("pretraining_data"))
    return _built["data"]


class SteppingTime(ManualTime):
    """A time source that moves `seconds` forward each time it is read: the budget clock reads it once per step."""

    def __init__(self, seconds: float):
        super().__init__()
        self.seconds = seconds

    def __call__(self) -> float:
        self.advance(self.seconds)
        return self.now


def fake_clock(argv: list[str], seconds_per_read: float = 1.0) -> BudgetClock:
    """A budget clock for `run_mlm.main(argv, clock=...)`: `--total_training_time` of `argv`, on a `SteppingTime`."""
    budget_seconds = float(argv[argv.index("--total_training_time") + 1]) * 3600.0
    return BudgetClock(budget_seconds, time_fn=SteppingTime(seconds_per_read))


def import_run_mlm():
    """run_mlm.py, a script at the repository root, as a module (to call its `main` in this process)."""
    spec = importlib.util.spec_from_file_location("run_mlm", REPO / "run_mlm.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now (for MASTER_PORT / `--master_port`)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def one_process_env() -> dict[str, str]:
    """What a launcher would set: DeepSpeed in a single process without one needs it (see NOTES.md)."""
    return dict(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()))


def wait_until(condition, process, what: str, timeout: float = WAIT_SECONDS):
    """Poll `condition` every few milliseconds until it returns something true; fail if `process` ends first.

    `process` is a `subprocess.Popen` or a `multiprocessing.Process`.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        alive = process.poll() is None if isinstance(process, subprocess.Popen) else process.is_alive()
        if not alive:
            pytest.fail(f"the run ended before {what}")
        time.sleep(0.005)
    pytest.fail(f"timed out waiting for {what}")
