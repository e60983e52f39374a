"""The background pusher against the fake Hub, with the real huggingface_hub client."""

import logging
import shlex
import time
from types import SimpleNamespace

import pytest
from huggingface_hub import ModelCard

from budget_bert.hub import push
from budget_bert.hub.model_card import ModelCardInfo
from budget_bert.hub.pusher import PUSH_RECORD_NAME, SnapshotPusher
from trainer_callbacks import SnapshotInfo
from hub_server import HUB_TOKEN, hub_env, hub_server, make_snapshot  # noqa: F401 - fixtures


REPO = "fake-user/bert-24h"


@pytest.fixture
def run_dir(tmp_path):
    """A run's output_dir with two snapshot folders, as the snapshot callback leaves them."""
    out = tmp_path / "out"
    make_snapshot(out / "finetune_snapshots" / "marker-0.50", seed=1)
    make_snapshot(out / "finetune_snapshots" / "end", seed=2)
    return out


def snapshots(run_dir):
    return [run_dir / "finetune_snapshots" / "marker-0.50", run_dir / "finetune_snapshots" / "end"]


def folder_files(folder):
    """The files a branch mirrors: the folder's, less its record of where it was pushed."""
    return {
        str(path.relative_to(folder)): path.read_bytes()
        for path in folder.rglob("*")
        if path.is_file() and path.name != PUSH_RECORD_NAME
    }


def make_pusher(hub, **kwargs):
    options = dict(token=hub.token, endpoint=hub.url, backoff_seconds=0.01, max_backoff_seconds=0.05)
    return SnapshotPusher(REPO, **{**options, **kwargs})


def pusher_messages(caplog):
    return "\n".join(record.getMessage() for record in caplog.records if record.name == "budget_bert.hub.pusher")


def wait_for(condition):
    """Poll `condition` until it holds (bounded, so that a regression fails instead of hanging)."""
    deadline = time.monotonic() + 30
    while not condition():
        assert time.monotonic() < deadline, "condition never became true"
        time.sleep(0.01)


def test_each_snapshot_lands_on_its_branch_and_the_end_on_main(hub_env, run_dir):
    pusher = make_pusher(hub_env)
    for folder, marker in zip(snapshots(run_dir), (0.5, None)):
        snapshot = SnapshotInfo(folder.name, marker, global_step=7, elapsed_seconds=1800.0, budget_seconds=3600.0)
        pusher.submit(folder, card_info=ModelCardInfo(snapshot=snapshot))

    report = pusher.close(timeout=60)

    assert report.all_pushed and [job.branch for job in report.pushed] == ["marker-0.50", "end"]
    repo = hub_env.repo(REPO)
    assert set(repo.branches) == {"main", "marker-0.50", "end"}
    for folder in snapshots(run_dir):
        # The card was written into the folder first, so the branch mirrors the folder exactly.
        gitattributes = repo.files("main")[".gitattributes"]
        assert repo.files(folder.name) == {**folder_files(folder), ".gitattributes": gitattributes}
    assert repo.files("main") == repo.files("end")
    card = ModelCard(repo.files("marker-0.50")["README.md"].decode())
    assert card.data.budget_bert["marker"] == 0.5 and card.data.budget_bert["global_step"] == 7
    assert repo.files("marker-0.50")["model.safetensors"] != repo.files("end")["model.safetensors"]
    assert hub_env.unknown_routes == []


def test_a_branch_mirrors_its_folder_and_an_unchanged_push_adds_no_commit(hub_env, run_dir):
    folder = snapshots(run_dir)[0]
    (folder / "stale.txt").write_text("left over from an earlier snapshot")
    pusher = make_pusher(hub_env)
    pusher.submit(folder)
    pusher.submit(folder)
    assert pusher.close(timeout=60).all_pushed
    repo = hub_env.repo(REPO)
    assert "stale.txt" in repo.files("marker-0.50") and len(repo.history("marker-0.50")) == 2

    (folder / "stale.txt").unlink()
    pusher = make_pusher(hub_env)
    pusher.submit(folder)
    assert pusher.close(timeout=60).all_pushed

    assert "stale.txt" not in repo.files("marker-0.50")
    assert [commit.title for commit in repo.history("marker-0.50")] == [
        "Snapshot marker-0.50", "Snapshot marker-0.50", "initial commit",
    ]


def test_failed_commits_are_retried_with_backoff_until_they_land(hub_env, run_dir, caplog):
    hub_env.inject_fault("commit", times=2, status=500)
    pusher = make_pusher(hub_env)

    with caplog.at_level(logging.WARNING, logger="budget_bert.hub.pusher"):
        pusher.submit(snapshots(run_dir)[0])
        report = pusher.close(timeout=60)

    assert report.all_pushed and report.pushed[0].attempts == 3
    assert "marker-0.50" in hub_env.repo(REPO).branches
    messages = pusher_messages(caplog)
    assert messages.count("retrying in") == 2 and "in the background" in messages
    assert [status for method, path, status in hub_env.requests_of("/commit/")] == [500, 500, 200]


def test_a_dropped_upload_connection_is_retried(hub_env, run_dir):
    hub_env.inject_fault("lfs_upload", times=1, status=None)
    hub_env.inject_fault("commit", times=1, status=None)
    pusher = make_pusher(hub_env)

    pusher.submit(snapshots(run_dir)[1])
    report = pusher.close(timeout=60)

    assert report.all_pushed
    assert hub_env.repo(REPO).files("main") == hub_env.repo(REPO).files("end")
    assert [status for method, path, status in hub_env.requests_of("/__lfs__/")] == [0, 200]


def test_submit_returns_while_the_hub_hangs_and_close_is_bounded(hub_env, run_dir, caplog):
    hub_env.gate.clear()
    pusher = make_pusher(hub_env)

    pusher.submit(snapshots(run_dir)[0])  # returns although no request can be answered
    wait_for(lambda: hub_env.arrived >= 1)  # the background push is stuck inside the Hub
    with caplog.at_level(logging.ERROR, logger="budget_bert.hub.pusher"):
        report = pusher.close(timeout=0.2)

    assert [job.branch for job in report.not_pushed] == ["marker-0.50"] and not report.pushed
    assert "still uploading" in pusher_messages(caplog)
    hub_env.gate.set()


def test_hub_down_for_the_whole_run_leaves_the_snapshots_and_the_command_to_push_them(
    hub_env, run_dir, caplog, monkeypatch
):
    before = {folder: folder_files(folder) for folder in snapshots(run_dir)}
    hub_env.down = True
    pusher = make_pusher(hub_env, max_attempts=2)

    with caplog.at_level(logging.WARNING, logger="budget_bert.hub.pusher"):
        for folder in snapshots(run_dir):
            pusher.submit(folder)
        report = pusher.close(timeout=60)

    assert [job.branch for job in report.not_pushed] == ["marker-0.50", "end"]
    assert all(job.attempts == 2 and "RemoteProtocolError" in job.error for job in report.not_pushed)
    assert {folder: folder_files(folder) for folder in snapshots(run_dir)} == before
    messages = pusher_messages(caplog)
    assert "2 snapshot(s) were not pushed to fake-user/bert-24h; they stay on disk" in messages
    marker = "push it later with: "
    commands = [line.split(marker, 1)[1] for line in messages.splitlines() if marker in line]
    assert len(commands) == 2 and HUB_TOKEN not in caplog.text

    # The Hub comes back: the logged commands, as they are, push the snapshots after the fact.
    hub_env.down = False
    monkeypatch.setenv("HF_TOKEN", hub_env.token)
    for command in commands:
        argv = shlex.split(command)
        assert argv[:3] == ["python", "-m", "budget_bert.hub.push"]
        assert push.main(argv[3:]) == 0
    repo = hub_env.repo(REPO)
    assert set(repo.branches) == {"main", "marker-0.50", "end"} and repo.files("main") == repo.files("end")


def test_the_snapshots_not_pushed_are_reported_in_the_order_submitted(hub_env, run_dir, caplog):
    # The marker's push fails with a server error and waits out its backoff; the end's is refused (not retried), so
    # the end is given up before the marker: the report still lists the marker first.
    hub_env.inject_fault("commit", times=1, status=500)
    hub_env.inject_fault("commit", times=1, status=403)
    pusher = make_pusher(hub_env, max_attempts=2, backoff_seconds=60, max_backoff_seconds=60)

    with caplog.at_level(logging.ERROR, logger="budget_bert.hub.pusher"):
        for folder in snapshots(run_dir):
            pusher.submit(folder)
        wait_for(lambda: "Giving up pushing snapshot end" in pusher_messages(caplog))
        assert [status for _, _, status in hub_env.requests_of("/commit/")] == [500, 403]
        hub_env.down = True  # the marker's second and last attempt fails too
        report = pusher.close(timeout=60)

    assert [job.branch for job in report.not_pushed] == ["marker-0.50", "end"]
    marker = "push it later with: "
    commands = [line.split(marker, 1)[1] for line in pusher_messages(caplog).splitlines() if marker in line]
    assert [shlex.split(command)[-1] for command in commands] == [str(folder) for folder in snapshots(run_dir)]


def test_an_invalid_token_is_not_retried(hub_env, run_dir, caplog):
    pusher = make_pusher(hub_env, token="hf_wrong")

    with caplog.at_level(logging.ERROR, logger="budget_bert.hub.pusher"):
        pusher.submit(snapshots(run_dir)[0])
        report = pusher.close(timeout=60)

    assert report.not_pushed[0].attempts == 1
    messages = pusher_messages(caplog)
    assert "Giving up" in messages and "401" in messages and "Invalid credentials" in messages
    assert "hf_wrong" not in caplog.text


def test_a_folder_without_config_is_refused_at_once(hub_env, tmp_path):
    pusher = make_pusher(hub_env)
    with pytest.raises(ValueError, match="no config.json"):
        pusher.submit(tmp_path)
    assert pusher.close(timeout=5).all_pushed


def test_the_token_is_in_no_file_and_no_log(hub_env, run_dir, tmp_path, caplog, capfd):
    command_line = ["run_mlm.py", "--push_to_hub", "--hub_token", hub_env.token, f"--hub_token={hub_env.token}"]
    with caplog.at_level(logging.DEBUG):
        pusher = make_pusher(hub_env)
        hub_env.inject_fault("commit", times=1, status=500)  # the retry path logs too
        for folder in snapshots(run_dir):
            pusher.submit(folder, card_info=ModelCardInfo(command_line=command_line))
        report = pusher.close(timeout=60)
        logging.getLogger("some.library").warning("a careless message with %s", hub_env.token)

    assert report.all_pushed
    token = hub_env.token.encode()
    written = [path for path in tmp_path.rglob("*") if path.is_file() and token in path.read_bytes()]
    assert written == []
    pushed = [path for repo in hub_env.repos.values() for commit in repo.commits.values()
              for path, stored in commit.files.items() if token in stored.data]
    assert pushed == []
    captured = capfd.readouterr()
    assert hub_env.token not in caplog.text + captured.out + captured.err
    assert "a careless message with <SECRET>" in caplog.text
