"""GLUE data handling on in-memory data sets: text columns, labels, column checks, split names."""

import pytest
from datasets import ClassLabel, Dataset, DatasetDict, Features, Value

from budget_bert.glue.glue_arguments import DataArguments
from budget_bert.glue.glue_data import check_columns, infer_labels, split_names, text_columns
from budget_bert.glue.tasks import get_task


def splits(**columns_by_split) -> DatasetDict:
    """A DatasetDict from `split={column: values}` keyword arguments."""
    return DatasetDict({split: Dataset.from_dict(columns) for split, columns in columns_by_split.items()})


def test_text_columns_follow_hf_run_glue_conventions():
    pairs = splits(train={"idx": [0], "premise": ["a"], "sentence2": ["b"], "sentence1": ["c"], "label": [0]})
    assert text_columns(pairs, None) == ("sentence1", "sentence2")
    firsts = splits(train={"idx": [0], "question": ["a"], "answer": ["b"], "label": [0]})
    assert text_columns(firsts, None) == ("question", "answer")
    single = splits(train={"idx": [0], "text": ["a"], "label": [1]})
    assert text_columns(single, None) == ("text", None)
    assert text_columns(single, get_task("qnli")) == ("question", "sentence")


def test_labels_without_a_task():
    strings = splits(train={"text": ["a"] * 3, "label": ["pos", "neg", "pos"]},
                     validation={"text": ["b"], "label": ["neg"]})
    labels = infer_labels(strings, None)
    assert (labels.is_regression, labels.names, labels.to_id) == (False, ("neg", "pos"), {"neg": 0, "pos": 1})
    assert infer_labels(splits(train={"text": ["a"], "label": [0.5]}), None).is_regression
    features = Features({"text": Value("string"), "label": ClassLabel(names=["no", "yes"])})
    named = DatasetDict({"train": Dataset.from_dict({"text": ["a"], "label": [1]}, features=features)})
    assert infer_labels(named, None).names == ("no", "yes")
    unseen = splits(train={"text": ["a", "b"], "label": ["pos", "neg"]}, validation={"text": ["c"], "label": ["meh"]})
    unknown = r"validation: labels \['meh'\] are outside the task's label set \['neg', 'pos'\]"
    with pytest.raises(ValueError, match=unknown):
        infer_labels(unseen, None)


def test_task_labels_accept_names_or_ids_and_ignore_test_labels():
    data = splits(train={"sentence": ["a", "b"], "label": ["positive", "negative"]},
                  validation={"sentence": ["c"], "label": [1]}, test={"sentence": ["d"], "label": [-1]})
    labels = infer_labels(data, get_task("sst2"))
    assert labels.names == ("negative", "positive")
    assert labels.to_id["positive"] == labels.to_id[1] == 1
    assert infer_labels(data, get_task("stsb")).is_regression


def test_missing_columns_are_reported_per_file():
    data_args = DataArguments(task_name="mnli", train_file="train.csv", validation_file="dev.csv",
                              validation_mismatched_file="dev_mm.csv")
    data = splits(train={"premise": ["a"], "hypothesis": ["b"], "label": [0]},
                  validation_matched={"premise": ["a"], "label": [0]},
                  validation_mismatched={"premise": ["a"], "hypothesis": ["b"]})
    with pytest.raises(ValueError) as error:
        check_columns(data, ("premise", "hypothesis"), data_args, get_task("mnli"))
    message = str(error.value)
    assert "dev.csv: missing column(s) ['hypothesis']" in message
    assert "dev_mm.csv: missing column(s) ['label']" in message
    assert "train.csv" not in message


def test_local_files_load_under_the_task_split_names():
    assert split_names(get_task("mnli")) == {"train": "train", "validation": "validation_matched",
                                             "validation_mismatched": "validation_mismatched", "test": "test_matched"}
    assert split_names(None) == {"train": "train", "validation": "validation", "test": "test"}
