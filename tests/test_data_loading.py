"""Tests of budget_bert.data.loading: clear errors for bad --dataset_path, and the shard-sized epoch."""

import dataclasses

import pytest
from datasets import Dataset, DatasetDict

from budget_bert.data.loading import load_prepared_dataset, steps_per_shard
from budget_bert.data.metadata import METADATA_NAME, PreparedDataMetadata


def _metadata(train_examples, validation_examples=0):
    return PreparedDataMetadata(
        max_seq_length=8, tokenizer_name="tiny", vocab_size=50, input_ids_dtype="int16", num_shards=1,
        examples_per_shard=train_examples, shard_sizes=[train_examples], train_examples=train_examples,
        train_tokens=8 * train_examples, validation_examples=validation_examples,
    )


def _write(path, train_rows, metadata):
    rows = [[2, 5, 6, 7, 8, 9, 10, 3]] * train_rows
    DatasetDict(train=Dataset.from_dict({"input_ids": rows})).save_to_disk(path)
    metadata.to_json_file(path / METADATA_NAME)


def test_loads_train_metadata_and_no_validation(tmp_path):
    _write(tmp_path, 4, _metadata(4))
    train, validation, metadata = load_prepared_dataset(tmp_path)
    assert len(train) == 4 and validation is None and metadata == _metadata(4)


def test_missing_folder_names_the_flag_and_the_fix(tmp_path):
    with pytest.raises(ValueError, match=r"^--dataset_path .*nowhere: no such folder; prepare it with prepare_data"):
        load_prepared_dataset(tmp_path / "nowhere")


def test_folder_that_is_not_prepared_data(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ValueError, match=rf"^--dataset_path .* is not prepared data \(no {METADATA_NAME}\)"):
        load_prepared_dataset(tmp_path)


def test_empty_training_split(tmp_path):
    _write(tmp_path, 0, _metadata(0))
    with pytest.raises(ValueError, match="^--dataset_path .* holds no training examples"):
        load_prepared_dataset(tmp_path)


def test_metadata_that_disagrees_with_the_data(tmp_path):
    _write(tmp_path, 4, _metadata(5))
    with pytest.raises(ValueError, match="^--dataset_path .*4 training examples where metadata.json says 5"):
        load_prepared_dataset(tmp_path)


def test_unreadable_metadata(tmp_path):
    _write(tmp_path, 4, dataclasses.replace(_metadata(4), format_version=99))
    with pytest.raises(ValueError, match="^--dataset_path .*unreadable prepared data .*format_version 99"):
        load_prepared_dataset(tmp_path)
    (tmp_path / METADATA_NAME).write_text("{not json")
    with pytest.raises(ValueError, match="^--dataset_path .*unreadable prepared data"):
        load_prepared_dataset(tmp_path)


@pytest.mark.parametrize(
    ("examples", "batch", "steps"), [(1000, 256, 4), (1024, 256, 4), (1025, 256, 5), (10, 4096, 1)]
)
def test_steps_per_shard_rounds_up(examples, batch, steps):
    assert steps_per_shard(examples, batch) == steps


def test_steps_per_shard_rejects_empty_sizes():
    with pytest.raises(ValueError, match="global_batch_size=0"):
        steps_per_shard(100, 0)
