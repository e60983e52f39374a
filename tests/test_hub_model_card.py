"""The model card written into each snapshot: Hub metadata, training state, architecture, command line."""

import pytest
from huggingface_hub import ModelCard
from transformers import BertForMaskedLM, TrainerState

import budget_bert
from budget_bert.hub.model_card import ModelCardInfo, count_parameters, describe_hardware, write_model_card
from hub_server import make_snapshot
from trainer_callbacks import SnapshotInfo


SECRET = "hf_cardTestSecret"


@pytest.fixture(scope="module")
def bert_snapshot(tmp_path_factory):
    return make_snapshot(tmp_path_factory.mktemp("run") / "marker-0.50")


def full_info(marker=0.5, **overrides):
    snapshot = SnapshotInfo("marker-0.50", marker, global_step=1234, elapsed_seconds=43210.4, budget_seconds=86400.0)
    values = dict(
        snapshot=snapshot, tokens_seen=9876543, eval_loss=2.34567, hardware="2 x Test GPU; 2 processes",
        command_line=["deepspeed", "run_mlm.py", "--hub_token", SECRET, f"--hub_token={SECRET}", "--push_to_hub"],
    )
    return ModelCardInfo(**{**values, **overrides})


def test_card_carries_the_training_state_as_metadata_and_text(bert_snapshot):
    path = write_model_card(bert_snapshot, full_info(), repo_id="me/bert-24h", branch="marker-0.50", also_main=False)

    card = ModelCard.load(path)
    assert card.data.library_name == "transformers"
    assert card.data.pipeline_tag == "fill-mask"
    assert card.data.budget_bert == {
        "snapshot": "marker-0.50", "architecture": "BertForMaskedLM", "marker": 0.5, "global_step": 1234,
        "elapsed_seconds": 43210.4, "budget_seconds": 86400.0, "tokens_seen": 9876543, "eval_loss": 2.34567,
        "hardware": "2 x Test GPU; 2 processes",
    }
    for row in ("| Budget | 24 h |", "| Time marker | 0.50 of the budget |", "| Elapsed training time | 12:00:10 |",
                "| Optimizer steps | 1,234 |", "| Tokens seen | 9,876,543 |", "| Last evaluation loss | 2.3457 |",
                "| Layers | 2 |", "| Hidden size | 16 |", "| Attention heads | 2 |"):
        assert row in card.text
    assert 'from_pretrained("me/bert-24h", revision="marker-0.50")' in card.text
    assert "taken at the time marker 0.50 of the 24 h budget" in card.text
    assert "on the branch `marker-0.50` of this repository" in card.text
    assert "custom_code" not in card.data.tags  # stock BERT needs no remote code


def test_command_line_on_the_card_has_the_token_redacted(bert_snapshot):
    card = str(write_model_card(bert_snapshot, full_info(), repo_id="me/x", branch="b", also_main=False).read_text())

    assert SECRET not in card
    assert "--hub_token '<HUB_TOKEN>' '--hub_token=<HUB_TOKEN>' --push_to_hub" in card


def test_unknown_state_reads_not_recorded(bert_snapshot):
    path = write_model_card(bert_snapshot, ModelCardInfo(), repo_id="me/x", branch="end", also_main=True)
    card = ModelCard.load(path)

    assert card.data.budget_bert == {"snapshot": "end", "architecture": "BertForMaskedLM"}
    assert "| Optimizer steps | not recorded |" in card.text
    assert "taken at the end of training; it is on the branch `end` and on `main`" in card.text


def test_budget_bert_snapshot_card_asks_for_remote_code(tmp_path):
    folder = make_snapshot(tmp_path / "end", budget_bert.BudgetBertForMaskedLM)

    path = write_model_card(folder, full_info(marker=None), repo_id="me/x", branch="end", also_main=True)
    card = ModelCard.load(path)

    assert "custom_code" in card.data.tags
    assert card.data.budget_bert["architecture"] == "BudgetBertForMaskedLM"
    assert 'revision="end", trust_remote_code=True)' in card.text


def test_parameter_count_matches_the_model(bert_snapshot):
    assert count_parameters(bert_snapshot) == BertForMaskedLM.from_pretrained(bert_snapshot).num_parameters()


def test_hardware_description_names_the_process_count():
    assert describe_hardware(1).endswith("; 1 process")
    assert describe_hardware(4).endswith("; 4 processes")


def test_info_from_trainer_state_takes_steps_tokens_and_the_last_eval_loss():
    state = TrainerState(global_step=120, num_input_tokens_seen=4096)
    state.log_history = [{"loss": 5.0, "step": 50}, {"eval_loss": 4.5, "step": 50}, {"eval_loss": 3.25, "step": 100},
                         {"loss": 3.0, "step": 110}]

    snapshot = SnapshotInfo("marker-0.50", 0.5, global_step=120, elapsed_seconds=1800.0, budget_seconds=3600.0)

    info = ModelCardInfo.from_trainer_state(state, snapshot, world_size=2, command_line=("run_mlm.py",))

    assert (info.snapshot, info.tokens_seen, info.eval_loss) == (snapshot, 4096, 3.25)
    assert info.hardware.endswith("2 processes") and info.command_line == ["run_mlm.py"]
    uncounted = ModelCardInfo.from_trainer_state(TrainerState(), snapshot, world_size=1, command_line=[])
    assert (uncounted.tokens_seen, uncounted.eval_loss) == (None, None)
