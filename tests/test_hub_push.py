"""`python -m budget_bert.hub.push`: push existing snapshots after the fact."""

import pytest
from huggingface_hub import ModelCard

from budget_bert.cli import UsageError
from budget_bert.hub.model_card import ModelCardInfo, write_model_card
from budget_bert.hub.push import PushArguments, main
from trainer_callbacks import SnapshotInfo
from hub_server import hub_env, hub_server, make_snapshot  # noqa: F401 - fixtures


REPO = "fake-user/bert-24h"


@pytest.fixture
def run_dir(tmp_path):
    out = tmp_path / "out"
    for name in ("end", "marker-0.25", "marker-0.50"):
        make_snapshot(out / "finetune_snapshots" / name)
    return out


def test_a_run_dir_pushes_every_snapshot_to_its_branch_and_the_end_to_main(hub_env, run_dir, capsys):
    folders = run_dir / "finetune_snapshots"
    write_model_card(folders / "end", ModelCardInfo(tokens_seen=99), repo_id=REPO, branch="end", also_main=True)
    SnapshotInfo("marker-0.25", 0.25, global_step=40, elapsed_seconds=900.0, budget_seconds=3600.0).save(
        folders / "marker-0.25"
    )
    make_snapshot(folders / ".marker-0.75.partial")  # being written: not a snapshot yet

    assert main(["--hub_model_id", REPO, "--run_dir", str(run_dir), "--hub_token", hub_env.token]) == 0

    repo = hub_env.repo(REPO)
    assert set(repo.branches) == {"main", "marker-0.25", "marker-0.50", "end"}
    assert repo.files("main") == repo.files("end")

    def card(branch):
        return ModelCard(repo.files(branch)["README.md"].decode()).data.budget_bert

    # The card written at snapshot time is pushed as it is; a folder without one gets a card from what it records.
    assert card("end")["tokens_seen"] == 99
    assert card("marker-0.25") == {
        "snapshot": "marker-0.25", "architecture": "BertForMaskedLM", "marker": 0.25, "global_step": 40,
        "elapsed_seconds": 900.0, "budget_seconds": 3600.0,
    }
    assert card("marker-0.50") == {"snapshot": "marker-0.50", "architecture": "BertForMaskedLM"}
    printed = capsys.readouterr().out.splitlines()
    assert [line.rsplit("@", 1)[1] for line in printed] == ["marker-0.25", "marker-0.50", "end and main"]


def test_a_single_snapshot_can_go_to_a_branch_of_its_own_and_main(hub_env, run_dir):
    folder = run_dir / "finetune_snapshots" / "marker-0.50"

    argv = ["--hub_model_id", REPO, "--snapshot_dirs", str(folder), "--branch", "best", "--also_main", "True",
            "--hub_token", hub_env.token]
    assert main(argv) == 0

    repo = hub_env.repo(REPO)
    assert set(repo.branches) == {"main", "best"} and repo.files("main") == repo.files("best")


def test_exit_status_is_1_when_the_hub_is_down(hub_env, run_dir):
    hub_env.down = True

    argv = ["--hub_model_id", REPO, "--run_dir", str(run_dir), "--hub_token", hub_env.token, "--max_attempts", "1"]
    assert main(argv) == 1


@pytest.mark.parametrize(
    ("arguments", "problem"),
    [
        ([], "either --snapshot_dirs DIR"),
        (["--run_dir", "{run}", "--snapshot_dirs", "{run}/finetune_snapshots/end"], "not both or neither"),
        (["--run_dir", "{tmp}"], "has no snapshots"),
        (["--run_dir", "{run}", "--branch", "b"], "--branch names the branch of a single snapshot"),
        (["--snapshot_dirs", "{tmp}"], "is not a snapshot folder"),
        (["--run_dir", "{run}", "--max_attempts", "0"], "--max_attempts must be at least 1"),
    ],
)
def test_invalid_arguments_name_the_flag(run_dir, tmp_path, arguments, problem):
    values = [argument.format(run=run_dir, tmp=tmp_path) for argument in arguments]
    with pytest.raises(ValueError, match=problem):
        main(["--hub_model_id", REPO, *values])


def test_all_problems_are_reported_at_once(tmp_path):
    with pytest.raises(UsageError) as error:
        PushArguments(hub_model_id=REPO, snapshot_dirs=[str(tmp_path), str(tmp_path)], branch="b", max_attempts=0)
    assert len(error.value.problems) == 4
