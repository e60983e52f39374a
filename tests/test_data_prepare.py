"""Tests of budget_bert.data.prepare and prepare_data.py: raw text to packed shards, validation and metadata."""

import json
import random
import re
import runpy
from pathlib import Path

import datasets
import huggingface_hub
import pytest
from transformers import AutoTokenizer

from budget_bert.cli import run_cli
from budget_bert.data.data_arguments import PrepareDataArguments, TextDataArguments
from budget_bert.data.loading import load_prepared_dataset
from budget_bert.data.metadata import METADATA_NAME
from budget_bert.data.prepare import build_mlm_datasets, prepare_dataset, resolve_text_files
from budget_bert.data.tokenization import train_wordpiece_tokenizer


REPO = Path(__file__).resolve().parents[1]
WORDS = (
    "the model reads a sentence and predicts the hidden words from their context while the clock runs out of "
    "time so every step must count toward a better encoder for the language tasks that follow"
).split()
SEQ_LEN = 32


def _write_corpus(folder: Path, files: int, documents: int, seed: int) -> list[str]:
    """Write text files of blank-line-separated documents; return the documents in file order."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for index in range(files):
        docs = [
            "\n".join(" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 25))) for _ in range(rng.randint(1, 4)))
            for _ in range(documents)
        ]
        (folder / f"part-{index}.txt").write_text("\n\n".join(docs) + "\n", encoding="utf-8")
        written.extend(docs)
    return written


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    documents = _write_corpus(root / "text", files=3, documents=120, seed=0)
    files = sorted((root / "text").glob("*.txt"))
    tokenizer = train_wordpiece_tokenizer(files, 100, root / "tokenizer", min_frequency=1)
    return {"root": root, "text": root / "text", "documents": documents, "tokenizer_dir": str(root / "tokenizer"),
            "tokenizer": tokenizer}


def _args(corpus, tmp_path, **overrides):
    values = dict(
        train_file=[str(corpus["text"])],
        tokenizer_name=corpus["tokenizer_dir"],
        output_dir=str(tmp_path / "prepared"),
        max_seq_length=SEQ_LEN,
        num_shards=4,
        dataset_cache_dir=str(tmp_path / "cache"),
    )
    values.update(overrides)
    return PrepareDataArguments(**values)


def _content_tokens(examples, tokenizer):
    special = set(tokenizer.all_special_ids)
    return [token for ids in examples["input_ids"] for token in ids if token not in special]


def test_prepare_writes_shards_validation_tokenizer_and_metadata(corpus, tmp_path):
    metadata = prepare_dataset(_args(corpus, tmp_path))
    out = tmp_path / "prepared"

    shards = sorted(path.name for path in (out / "train").glob("*.arrow"))
    assert shards == [f"data-0000{i}-of-00004.arrow" for i in range(4)]
    assert len(list((out / "validation").glob("*.arrow"))) == 1
    on_disk = json.loads((out / METADATA_NAME).read_text())
    assert on_disk["num_shards"] == 4 and on_disk["max_seq_length"] == SEQ_LEN
    assert on_disk["arguments"]["train_file"] == [str(corpus["text"])]
    assert sum(metadata.shard_sizes) == metadata.train_examples
    assert metadata.examples_per_shard == min(metadata.shard_sizes) == metadata.train_examples // 4
    assert metadata.vocab_size == len(corpus["tokenizer"]) and metadata.input_ids_dtype == "int16"

    train, validation, loaded = load_prepared_dataset(out)
    assert loaded == metadata
    assert len(train) == metadata.train_examples and len(validation) == metadata.validation_examples
    # The 1% default hold-out, rounded up by datasets.
    assert validation.num_rows == -(-(len(train) + len(validation)) // 100)
    assert train.features["input_ids"].feature.dtype == "int16"
    assert metadata.train_tokens == sum(len(ids) for ids in train["input_ids"])
    saved_tokenizer = AutoTokenizer.from_pretrained(out / "tokenizer")
    assert saved_tokenizer.get_vocab() == corpus["tokenizer"].get_vocab()


def test_packed_examples_are_bert_sequences_and_keep_every_token(corpus, tmp_path):
    tokenizer = corpus["tokenizer"]
    batch_size = 50
    splits = build_mlm_datasets(
        _args(corpus, tmp_path, preprocessing_batch_size=batch_size), tokenizer, seed=0
    )
    examples = [ids for split in splits.values() for ids in split["input_ids"]]

    assert all(ids[0] == tokenizer.cls_token_id and ids[-1] == tokenizer.sep_token_id for ids in examples)
    assert all(tokenizer.pad_token_id not in ids for ids in examples)
    short = [ids for ids in examples if len(ids) != SEQ_LEN]
    assert all(len(ids) < SEQ_LEN for ids in short)
    # At most one shorter tail per map batch of documents.
    assert len(short) <= -(-len(corpus["documents"]) // batch_size)
    expected = sum(len(tokenizer(doc, add_special_tokens=False)["input_ids"]) for doc in corpus["documents"])
    packed = sum(len(_content_tokens(split, tokenizer)) for split in splits.values())
    assert packed == expected


def test_larger_than_memory_path_stays_in_on_disk_arrow_files(corpus, tmp_path):
    splits = build_mlm_datasets(_args(corpus, tmp_path), corpus["tokenizer"], seed=0)
    cache = tmp_path / "cache"

    for split in splits.values():
        files = [Path(entry["filename"]) for entry in split.cache_files]
        assert files, "the packed data lives in memory instead of memory-mapped Arrow files"
        assert all(path.suffix == ".arrow" and path.is_file() and cache in path.parents for path in files)
    assert any(path.name.startswith("cache-") for path in cache.rglob("*.arrow")), "map wrote no cache file"


def test_the_hold_out_is_reproducible_with_the_seed(corpus, tmp_path):
    tokenizer = corpus["tokenizer"]
    first = build_mlm_datasets(_args(corpus, tmp_path, validation_proportion=0.1), tokenizer, seed=3)
    again = build_mlm_datasets(_args(corpus, tmp_path, validation_proportion=0.1), tokenizer, seed=3)
    other = build_mlm_datasets(_args(corpus, tmp_path, validation_proportion=0.1), tokenizer, seed=4)

    assert first["validation"]["input_ids"] == again["validation"]["input_ids"]
    assert first["train"]["input_ids"] == again["train"]["input_ids"]
    assert first["validation"]["input_ids"] != other["validation"]["input_ids"]
    assert len(first["validation"]) == -(-(len(first["train"]) + len(first["validation"])) // 10)


def test_parallel_workers_pack_the_same_tokens(corpus, tmp_path):
    tokenizer = corpus["tokenizer"]
    serial = build_mlm_datasets(_args(corpus, tmp_path, validation_proportion=0), tokenizer, seed=0)
    parallel = build_mlm_datasets(
        _args(corpus, tmp_path, validation_proportion=0, preprocessing_num_workers=2), tokenizer, seed=0
    )
    assert list(parallel) == ["train"]
    assert _content_tokens(parallel["train"], tokenizer) == _content_tokens(serial["train"], tokenizer)


def test_validation_file_replaces_the_hold_out(corpus, tmp_path):
    validation_docs = _write_corpus(tmp_path / "validation", files=1, documents=30, seed=9)
    tokenizer = corpus["tokenizer"]
    splits = build_mlm_datasets(
        _args(corpus, tmp_path, validation_file=[str(tmp_path / "validation" / "part-0.txt")]), tokenizer, seed=0
    )
    expected = sum(len(tokenizer(doc, add_special_tokens=False)["input_ids"]) for doc in validation_docs)
    assert len(_content_tokens(splits["validation"], tokenizer)) == expected


def test_no_validation_split_when_the_proportion_is_zero(corpus, tmp_path):
    prepare_dataset(_args(corpus, tmp_path, validation_proportion=0.0))
    _, validation, metadata = load_prepared_dataset(tmp_path / "prepared")
    assert validation is None and metadata.validation_examples == 0


def test_a_local_dataset_folder_loads_through_dataset_name(corpus, tmp_path):
    folder = tmp_path / "local_dataset"
    folder.mkdir()
    rows = [{"content": doc, "id": index} for index, doc in enumerate(corpus["documents"][:100])]
    (folder / "train.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    (folder / "validation.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows[:10]))
    tokenizer = corpus["tokenizer"]
    args = dict(train_file=None, dataset_name=str(folder), text_column="content")

    splits = build_mlm_datasets(_args(corpus, tmp_path, **args), tokenizer, seed=0)
    assert splits["train"].column_names == ["input_ids"]
    expected = sum(len(tokenizer(row["content"], add_special_tokens=False)["input_ids"]) for row in rows[:10])
    assert len(_content_tokens(splits["validation"], tokenizer)) == expected

    with pytest.raises(ValueError, match="--text_column body: not a column .* content, id"):
        build_mlm_datasets(_args(corpus, tmp_path, **{**args, "text_column": "body"}), tokenizer, seed=0)
    with pytest.raises(ValueError, match="--validation_proportion: .* has its own validation split"):
        build_mlm_datasets(_args(corpus, tmp_path, **args, validation_proportion=0.1), tokenizer, seed=0)


def test_resolve_text_files_expands_globs_and_folders(corpus):
    folder = corpus["text"]
    expected = [str(folder / f"part-{i}.txt") for i in range(3)]
    assert resolve_text_files([str(folder)], "--train_file") == expected
    assert resolve_text_files([str(folder / "part-*.txt"), str(folder / "part-0.txt")], "--train_file") == expected
    with pytest.raises(ValueError, match=r"^--validation_file .*missing\*\.txt: no such file"):
        resolve_text_files([str(folder / "missing*.txt")], "--validation_file")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"dataset_name": "wikitext"}, "--train_file and --dataset_name"),
        ({"train_file": None}, "no training text"),
        ({"validation_proportion": 1.5}, r"--validation_proportion must be in \[0, 1\)"),
        ({"validation_proportion": 0.1, "validation_file": ["v.txt"]}, "--validation_proportion and --validation_f"),
        ({"max_seq_length": 2, "num_shards": 0}, "--max_seq_length must be at least 3.*--num_shards must be"),
    ],
)
def test_invalid_arguments_are_reported_together(corpus, tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        _args(corpus, tmp_path, **overrides)


def test_text_arguments_alone_do_not_require_a_source():
    assert not TextDataArguments().has_source


def _run_cli(corpus, tmp_path, **flags):
    """Run prepare_data.py's main in this process, with the corpus fixture's flags overridden by `flags`."""
    values = {"train_file": str(corpus["text"]), "tokenizer_name": corpus["tokenizer_dir"],
              "output_dir": str(tmp_path / "out"), "max_seq_length": str(SEQ_LEN), "num_shards": "2",
              "dataset_cache_dir": str(tmp_path / "cache"), **flags}
    argv = []
    for flag, value in values.items():
        if value is not None:
            argv += [f"--{flag}"] if value is True else [f"--{flag}", value]
    run_cli("prepare_data.py", runpy.run_path(str(REPO / "prepare_data.py"), run_name="prepare_data")["main"], argv)


def usage_error_line(raised, capsys) -> str:
    """The one line a usage error printed (exit code 2)."""
    assert raised.value.code == 2
    (line,) = [line for line in capsys.readouterr().err.splitlines() if line.startswith("prepare_data.py: error: ")]
    return line


def test_cli_prepares_data_and_protects_the_output_dir(corpus, tmp_path, capsys):
    _run_cli(corpus, tmp_path, train_file=str(corpus["text"] / "*.txt"))
    assert load_prepared_dataset(tmp_path / "out")[2].num_shards == 2
    capsys.readouterr()

    with pytest.raises(SystemExit) as raised:
        _run_cli(corpus, tmp_path)
    line = usage_error_line(raised, capsys)
    assert re.match(r"^prepare_data.py: error: --output_dir .* --overwrite_output_dir", line)
    _run_cli(corpus, tmp_path, num_shards="3", overwrite_output_dir=True)
    assert load_prepared_dataset(tmp_path / "out")[2].num_shards == 3
    capsys.readouterr()

    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("keep me")
    with pytest.raises(SystemExit) as raised:
        _run_cli(corpus, tmp_path, output_dir=str(tmp_path / "other"), overwrite_output_dir=True)
    assert "holds something other than complete prepared data" in usage_error_line(raised, capsys)
    assert (tmp_path / "other" / "notes.txt").exists()


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        ({"train_file": "/nonexistent/corpus.txt"}, "--train_file /nonexistent/corpus.txt: no such file"),
        ({"num_shards": "100000"}, "--num_shards 100000 exceeds the"),
        ({"validation_proportion": "2"}, "--validation_proportion must be in"),
        ({"tokenizer_name": "/nonexistent/tokenizer"}, "--tokenizer_name /nonexistent/tokenizer: cannot be loaded"),
    ],
)
def test_cli_bad_inputs_give_one_line_errors_naming_the_flag(corpus, tmp_path, flags, message, capsys):
    with pytest.raises(SystemExit) as raised:
        _run_cli(corpus, tmp_path, **flags)
    assert message in usage_error_line(raised, capsys)


def test_cli_hub_dataset_offline_fails_with_a_clear_error(corpus, tmp_path, monkeypatch, capsys):
    # What HF_HUB_OFFLINE=1 sets when the libraries are imported (tests/conftest.py sets it for the whole run).
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(SystemExit) as raised:
        _run_cli(corpus, tmp_path, train_file=None, dataset_name="wikitext", dataset_config_name="wikitext-103-raw-v1")
    text = usage_error_line(raised, capsys)
    assert text.startswith("prepare_data.py: error: --dataset_name wikitext: cannot be loaded")
    assert "--train_file" in text and "\n" not in text
    assert not (tmp_path / "out").exists()
