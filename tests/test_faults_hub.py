"""Snapshots that an earlier run left unpushed (preempted before its uploads landed) are pushed by the resumed run;
the push command's bad arguments and folders are one line each."""

import subprocess

import pytest

from budget_bert.cli import run_cli
from budget_bert.hub import push
from budget_bert.hub.pusher import PUSH_RECORD_NAME, SnapshotPusher, is_pushed
from budget_bert.pretraining.resume import EXIT_PREEMPTED
from trainer_callbacks.snapshots import SNAPSHOTS_DIR, snapshot_name
from hub_server import hub_env, hub_server, make_snapshot  # noqa: F401 - fixtures
from pretraining_fixtures import REPO as REPO_ROOT, prepared_data  # noqa: F401 - fixture
from test_hub_run_mlm import REPO_ID, preempt_run_mlm, run_mlm_command


REPO = "fake-user/bert-24h"


def make_pusher(hub):
    return SnapshotPusher(REPO, token=hub.token, endpoint=hub.url, backoff_seconds=0.01, max_backoff_seconds=0.05)


@pytest.fixture
def run_dir(tmp_path):
    out = tmp_path / "out"
    for seed, name in enumerate(("marker-0.25", "marker-0.50", "end")):
        make_snapshot(out / "finetune_snapshots" / name, seed=seed)
    return out


def test_each_landed_snapshot_records_where_and_the_record_is_not_uploaded(hub_env, run_dir):  # noqa: F811
    folder = run_dir / "finetune_snapshots" / "end"
    pusher = make_pusher(hub_env)
    pusher.submit(folder)
    assert pusher.close(timeout=60).all_pushed
    assert is_pushed(folder, REPO, "end") and is_pushed(folder, REPO, "main")
    assert is_pushed(folder, "bert-24h", "end")  # the repo named without its namespace, as --hub_model_id may
    assert not is_pushed(folder, "someone-else/bert-24h", "end")
    assert PUSH_RECORD_NAME not in hub_env.repo(REPO).files("end")


def test_a_resumed_run_pushes_only_what_the_earlier_run_left_unpushed(hub_env, run_dir):  # noqa: F811
    snapshots = run_dir / "finetune_snapshots"
    first = make_pusher(hub_env)
    first.submit(snapshots / "marker-0.25")
    assert first.close(timeout=60).all_pushed
    commits = len(hub_env.repo(REPO).history("marker-0.25"))

    resumed = make_pusher(hub_env)
    queued = resumed.submit_unpushed(run_dir)
    report = resumed.close(timeout=60)

    assert [folder.name for folder in queued] == ["marker-0.50", "end"]
    assert report.all_pushed and [job.branch for job in report.pushed] == ["marker-0.50", "end"]
    assert set(hub_env.repo(REPO).branches) == {"main", "marker-0.25", "marker-0.50", "end"}
    assert len(hub_env.repo(REPO).history("marker-0.25")) == commits  # not pushed twice
    assert make_pusher(hub_env).submit_unpushed(run_dir) == []


def test_the_push_commands_bad_arguments_and_folders_are_one_line_each(run_dir, tmp_path, capsys):
    (run_dir / "finetune_snapshots" / "end" / "snapshot_info.json").write_text("{not json")
    (run_dir / "finetune_snapshots" / "end" / "README.md").unlink(missing_ok=True)
    cases = [
        (["--hub_model_id", REPO, "--run_dir", str(tmp_path / "nowhere"), "--max_attempts", "0"],
         ["has no snapshots in", "--max_attempts must be at least 1"]),
        (["--hub_model_id", REPO, "--snapshot_dirs", str(run_dir / "finetune_snapshots" / "end")],
         ["snapshot_info.json is unreadable"]),
    ]
    for argv, problems in cases:
        with pytest.raises(SystemExit) as exited:
            run_cli("python -m budget_bert.hub.push", push.main, argv)
        assert exited.value.code == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == len(problems)
        assert all(line.startswith("python -m budget_bert.hub.push: error: ") and problem in line
                   for line, problem in zip(lines, problems))


def test_a_resumed_run_pushes_the_snapshots_its_preempted_run_left_behind(hub_env, prepared_data, tmp_path):  # noqa: F811
    hub_env.down = True
    output_dir = tmp_path / "out"
    command = run_mlm_command(prepared_data, output_dir, "--hub_push_timeout_on_preemption", "0", markers="0.3")
    snapshot = output_dir / SNAPSHOTS_DIR / snapshot_name(0.3)
    returncode, output = preempt_run_mlm(command, snapshot.is_dir, "the first snapshot")
    assert returncode == EXIT_PREEMPTED, output[-3000:]
    assert not is_pushed(snapshot, REPO_ID, snapshot.name)

    hub_env.down = False
    resumed = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=180)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert "Pushing 1 snapshot(s) an earlier run of" in resumed.stdout + resumed.stderr
    assert set(hub_env.repo(REPO_ID).branches) == {"main", snapshot.name, "end"}
    assert is_pushed(snapshot, REPO_ID, snapshot.name)
