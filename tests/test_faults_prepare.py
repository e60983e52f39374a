"""Faults while preparing data: nothing already prepared is lost, and a killed preparation does not block its rerun.

Also the memory bound on very long documents: they are tokenized in pieces.
"""

import multiprocessing
import os
import re
import shutil

import pytest

from budget_bert.data import prepare
from budget_bert.data.data_arguments import PrepareDataArguments
from budget_bert.data.loading import load_prepared_dataset
from budget_bert.data.metadata import PreparedDataMetadata
from budget_bert.data.prepare import build_mlm_datasets, prepare_dataset, split_long_text
from pretraining_fixtures import prepared_data  # noqa: F401 - fixture


def _args(data, output_dir, **overrides) -> PrepareDataArguments:
    values = dict(
        train_file=[str(data.corpus)],
        tokenizer_name=str(data.tokenizer),
        output_dir=str(output_dir),
        max_seq_length=data.max_seq_length,
        num_shards=2,
        overwrite_output_dir=True,
    )
    return PrepareDataArguments(**{**values, **overrides})


@pytest.fixture
def prepared_copy(prepared_data, tmp_path):  # noqa: F811 - fixture
    """A copy of the session's prepared data that a test may overwrite, and its metadata."""
    output = tmp_path / "prepared"
    shutil.copytree(prepared_data.dataset, output)
    return output, load_prepared_dataset(output)[2]


def test_a_failed_overwrite_keeps_the_previous_data(prepared_data, prepared_copy, tmp_path):  # noqa: F811
    output, metadata = prepared_copy
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    with pytest.raises(ValueError, match=r"empty\.txt: empty: leave it out"):
        prepare_dataset(_args(prepared_data, output, train_file=[str(empty)]))
    assert load_prepared_dataset(output)[2] == metadata
    assert sorted(os.listdir(tmp_path)) == ["empty.txt", "prepared"]  # no staging folder left behind


def test_an_overwrite_refuses_a_train_file_inside_the_output_dir(prepared_data, prepared_copy):  # noqa: F811
    output, metadata = prepared_copy
    inside = output / "corpus.txt"
    shutil.copy(prepared_data.corpus, inside)
    with pytest.raises(ValueError, match=r"--train_file/--validation_file .*corpus.txt is inside --output_dir"):
        prepare_dataset(_args(prepared_data, output, train_file=[str(inside)]))
    assert inside.read_text() == prepared_data.corpus.read_text()
    assert load_prepared_dataset(output)[2] == metadata


def test_an_overwrite_refuses_a_folder_holding_more_than_prepared_data(prepared_data, prepared_copy):  # noqa: F811
    output, metadata = prepared_copy
    (output / "checkpoint-4").mkdir()  # a run whose --output_dir was its --dataset_path
    (output / "checkpoint-4" / "model.safetensors").write_bytes(b"weights")
    with pytest.raises(ValueError, match="holds something other than complete prepared data .*checkpoint-4"):
        prepare_dataset(_args(prepared_data, output))
    assert (output / "checkpoint-4" / "model.safetensors").read_bytes() == b"weights"
    assert load_prepared_dataset(output)[2] == metadata


def _prepare_killed_before_its_metadata(args: PrepareDataArguments) -> None:
    def die(*_, **__):
        os._exit(9)  # as SIGKILL would: no cleanup runs

    PreparedDataMetadata.to_json_file = die
    prepare_dataset(args)


def test_a_killed_preparation_keeps_the_previous_data_and_does_not_block_its_rerun(
    prepared_data, prepared_copy  # noqa: F811
):
    output, metadata = prepared_copy
    args = _args(prepared_data, output, num_shards=3)
    process = multiprocessing.get_context("fork").Process(target=_prepare_killed_before_its_metadata, args=(args,))
    process.start()
    process.join(timeout=300)
    assert process.exitcode == 9
    assert load_prepared_dataset(output)[2] == metadata

    assert prepare_dataset(args).num_shards == 3
    assert load_prepared_dataset(output)[2].num_shards == 3
    assert sorted(os.listdir(output.parent)) == ["prepared"]


def test_a_replacement_killed_between_its_renames_is_undone_by_the_rerun(prepared_data, prepared_copy):  # noqa: F811
    output, metadata = prepared_copy
    # The state a kill between "old data aside" and "new data in place" leaves: both next to a missing output.
    os.replace(output, output.parent / ".prepared.replaced")
    shutil.copytree(prepared_data.dataset, output.parent / ".prepared.preparing")

    with pytest.raises(ValueError, match="is not empty: pass --overwrite_output_dir"):
        prepare_dataset(_args(prepared_data, output, overwrite_output_dir=False))
    assert load_prepared_dataset(output)[2] == metadata  # the previous data is back in place
    assert sorted(os.listdir(output.parent)) == ["prepared"]


@pytest.mark.parametrize(
    ("text", "pieces"),
    [
        ("tiny", ["tiny"]),
        ("aaa bbb\nccc", ["aaa", " bbb", "\nccc"]),
        ("abcdefghij", ["abcd", "efgh", "ij"]),  # no whitespace: cut at the limit
        ("ab cdefghij", ["ab", " cde", "fghi", "j"]),
    ],
)
def test_long_text_is_cut_before_whitespace(text, pieces):
    assert split_long_text(text, max_chars=4) == pieces
    assert "".join(pieces) == text


def test_a_long_line_is_tokenized_in_bounded_pieces_to_the_same_ids(prepared_data, tmp_path, monkeypatch):  # noqa: F811
    text = " ".join(prepared_data.corpus.read_text().split())  # one line, no newline
    line = tmp_path / "line.txt"
    line.write_text(text)
    tokenizer = prepare.load_tokenizer(str(prepared_data.tokenizer))
    whole = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert len(text) > 20 * 1000

    monkeypatch.setattr(prepare, "MAX_PIECE_CHARS", 1000)
    longest = []
    call = type(tokenizer).__call__

    def spy(self, texts, *args, **kwargs):
        longest.append(max(len(piece) for piece in texts))
        return call(self, texts, *args, **kwargs)

    monkeypatch.setattr(type(tokenizer), "__call__", spy)
    args = _args(prepared_data, tmp_path / "out", train_file=[str(line)], validation_proportion=0.0,
                 max_seq_length=10**6, dataset_cache_dir=str(tmp_path / "cache"))
    packed = build_mlm_datasets(args, tokenizer, seed=0)["train"]["input_ids"]
    assert longest and max(longest) <= 1000
    assert packed == [[tokenizer.cls_token_id, *whole, tokenizer.sep_token_id]]


@pytest.mark.parametrize(("content", "alone", "problem"),
                         [(b"fine\n\xff\xfe text\n", False, "not UTF-8 text ("), (b"", True, "empty")])
def test_the_unreadable_one_of_the_train_files_is_named(prepared_data, tmp_path, content, alone, problem):  # noqa: F811
    bad = tmp_path / "bad.txt"
    bad.write_bytes(content)
    files = [str(bad)] if alone else [str(prepared_data.corpus), str(bad)]
    args = _args(prepared_data, tmp_path / "out", train_file=files, dataset_cache_dir=str(tmp_path / "cache"))
    with pytest.raises(ValueError, match=rf"^--train_file {bad}: {re.escape(problem)}"):
        prepare_dataset(args)
