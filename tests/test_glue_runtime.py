"""run_glue.py's steps around the Trainer that need no model: resuming, split selection, early stopping."""

import pytest
from datasets import Dataset, DatasetDict
from transformers import EarlyStoppingCallback, TrainingArguments

from budget_bert.glue.glue_arguments import FinetuneArguments
from budget_bert.glue.runtime import early_stopping, find_resume_checkpoint, pick_splits


def training_args(output_dir, **kwargs) -> TrainingArguments:
    """CPU training arguments writing to `output_dir`."""
    return TrainingArguments(output_dir=str(output_dir), do_train=True, use_cpu=True, **kwargs)


def test_resumes_from_the_last_checkpoint_unless_overwriting(tmp_path):
    for step in (2, 10, 9):
        (tmp_path / f"checkpoint-{step}").mkdir()
    last = find_resume_checkpoint(training_args(tmp_path), overwrite_output_dir=False)
    assert last == str(tmp_path / "checkpoint-10")
    assert find_resume_checkpoint(training_args(tmp_path), overwrite_output_dir=True) is None
    explicit = training_args(tmp_path, resume_from_checkpoint="elsewhere/checkpoint-3")
    assert find_resume_checkpoint(explicit, overwrite_output_dir=True) == "elsewhere/checkpoint-3"


def test_non_empty_output_dir_without_checkpoints_needs_overwrite(tmp_path):
    assert find_resume_checkpoint(training_args(tmp_path / "new"), overwrite_output_dir=False) is None
    (tmp_path / "notes.txt").write_text("someone else's file")
    with pytest.raises(ValueError, match=r"already exists and is not empty. Pass --overwrite_output_dir"):
        find_resume_checkpoint(training_args(tmp_path), overwrite_output_dir=False)
    assert find_resume_checkpoint(training_args(tmp_path), overwrite_output_dir=True) is None
    evaluation_only = TrainingArguments(output_dir=str(tmp_path), do_eval=True, use_cpu=True)
    assert find_resume_checkpoint(evaluation_only, overwrite_output_dir=False) is None


def test_pick_splits_keys_by_suffix_and_truncates():
    data = DatasetDict({"validation_matched": Dataset.from_dict({"x": list(range(5))}),
                        "validation_mismatched": Dataset.from_dict({"x": list(range(3))})})
    picked = pick_splits(data, (("validation_matched", ""), ("validation_mismatched", "_mm"), ("absent", "_a")), 4)
    assert {suffix: len(dataset) for suffix, dataset in picked.items()} == {"": 4, "_mm": 3}
    assert len(pick_splits(data, (("validation_matched", ""),), None)[""]) == 5


def test_early_stopping_tracks_the_headline_metric(tmp_path):
    args = training_args(tmp_path, eval_strategy="steps")
    assert early_stopping(args, FinetuneArguments(), "f1") == (args, [])
    tracked, callbacks = early_stopping(args, FinetuneArguments(early_stopping_patience=3), "mse")
    assert (tracked.metric_for_best_model, tracked.greater_is_better) == ("mse", False)
    assert isinstance(callbacks[0], EarlyStoppingCallback) and callbacks[0].early_stopping_patience == 3
