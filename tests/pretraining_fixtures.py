"""A tiny pretraining setup for the tests that run `run_mlm.py`, built once per test session.

Real English text (the docstrings of ten standard-library modules, about 11k words), a 2,000-token WordPiece
tokenizer trained on it, and that text prepared by `prepare_data.py`'s code into 4 shards of 64-token examples
(about 280 training and a few validation examples). Building it takes a few seconds.

    from pretraining_fixtures import TINY_MODEL_FLAGS, prepared_data  # noqa: F401 - fixture

    def test_run(prepared_data, tmp_path):
        subprocess.run([sys.executable, "run_mlm.py", "--dataset_path", str(prepared_data.dataset),
                        "--output_dir", str(tmp_path), *TINY_MODEL_FLAGS, ...], cwd=REPO, check=True)

Subprocesses inherit the offline and thread settings of `tests/conftest.py` through the environment.
"""

from __future__ import annotations

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


REPO = Path(__file__).resolve().parents[1]
WAIT_SECONDS = 300  # generous: the machine running the tests may be busy

# A BudgetBert small enough to take several optimizer steps a second on one CPU core.
TINY_MODEL_FLAGS = (
    "--hidden_size", "64", "--num_hidden_layers", "2", "--num_attention_heads", "2", "--intermediate_size", "128",
    "--max_position_embeddings", "128",
)

_MODULES = ["argparse", "collections", "csv", "datetime", "functools", "itertools", "json", "pathlib", "re", "typing"]
_VOCAB_SIZE = 2000


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


def build_prepared_data(root: Path, max_seq_length: int = 64, num_shards: int = 4) -> PreparedData:
    """Write the corpus, tokenizer and prepared data under `root` (what the `prepared_data` fixture holds)."""
    corpus = write_stdlib_corpus(root / "corpus", modules=_MODULES)
    tokenizer = train_wordpiece_tokenizer([corpus.path], _VOCAB_SIZE, root / "tokenizer")
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


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now (for MASTER_PORT / `--master_port`)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


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
