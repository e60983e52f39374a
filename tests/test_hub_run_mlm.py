"""`run_mlm.py --push_to_hub` end to end against the fake Hub: a short real-clock run with two time markers.

Each test is one run_mlm.py subprocess (an 8-second budget) that pushes its snapshots in the background: every
snapshot lands on its branch with its card and loads from there in a fresh process; refused and dropped uploads
are retried until they land; a Hub that is down leaves the snapshots on disk and the commands that push them
later, and a run stopped by SIGTERM waits for it only `--hub_push_timeout_on_preemption`. In every run, the token
given with `--hub_token` is in no file the run wrote and in none of its output.
"""

import json
import os
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import torch
from huggingface_hub import ModelCard
from safetensors.torch import load_file
from transformers import AutoModelForMaskedLM

from budget_bert.hub import push
from budget_bert.hub.pusher import PUSH_RECORD_NAME
from budget_bert.pretraining.resume import EXIT_PREEMPTED
from trainer_callbacks.snapshots import RUN_ARGUMENTS_FILE, SNAPSHOTS_DIR, SnapshotInfo, snapshot_name
from hub_server import HUB_TOKEN, hub_env, hub_server  # noqa: F401 - fixtures
from pretraining_fixtures import REPO, TINY_MODEL_FLAGS, prepared_data, wait_until  # noqa: F401 - fixture


REPO_ID = "fake-user/budget-bert-tiny"
BUDGET_SECONDS = 8.0
SNAPSHOTS = {"marker-0.30": 0.3, "marker-0.60": 0.6, "end": None}

# Runs in a fresh process that knows the Hub only through HF_ENDPOINT and must not import budget_bert: each
# branch has to load through the modeling code pushed with it.
LOADER = """
import json, sys
from safetensors.torch import save_file
from transformers import AutoModelForMaskedLM

repo, out, branches = sys.argv[1], sys.argv[2], sys.argv[3:]
classes = {}
for branch in branches:
    model = AutoModelForMaskedLM.from_pretrained(repo, revision=branch, trust_remote_code=True)
    save_file({name: tensor.clone() for name, tensor in model.state_dict().items()}, f"{out}/{branch}.safetensors")
    classes[branch] = type(model).__module__ + "." + type(model).__name__
with open(f"{out}/loaded.json", "w") as file:
    json.dump({"classes": classes, "imported_budget_bert": "budget_bert" in sys.modules}, file)
"""


def preempt_run_mlm(command: list[str], condition, what: str) -> tuple[int, str]:
    """Start `command`, send SIGTERM once `condition()` holds (`what`, for the failure message); its exit code and
    output."""
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_until(condition, process, what)
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=120)
    finally:
        process.kill()
    return process.returncode, output


def run_mlm_command(
    data, output_dir: Path, *flags: str, budget_seconds: float = BUDGET_SECONDS, markers: str = "0.3,0.6"
) -> list[str]:
    """The command that pretrains for `budget_seconds` with snapshots at `markers`, pushing them to `REPO_ID`."""
    return [
        sys.executable, "run_mlm.py", "--dataset_path", str(data.dataset), "--output_dir", str(output_dir),
        *TINY_MODEL_FLAGS, "--lr", "1e-3", "--train_micro_batch_size_per_gpu", "8", "--train_batch_size", "8",
        "--total_training_time", str(budget_seconds / 3600), "--finetune_time_markers", markers,
        "--log_level", "info", "--push_to_hub", "--hub_model_id", REPO_ID, "--hub_token", HUB_TOKEN, *flags,
    ]


def run_mlm(data, output_dir: Path, *flags: str) -> subprocess.CompletedProcess:
    """Run `run_mlm_command` with the defaults to its end; it must succeed."""
    command = run_mlm_command(data, output_dir, *flags)
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def folder_files(folder: Path) -> dict[str, bytes]:
    """The files a branch mirrors: the folder's, less its record of where it was pushed."""
    return {
        str(path.relative_to(folder)): path.read_bytes()
        for path in folder.rglob("*")
        if path.is_file() and path.name != PUSH_RECORD_NAME
    }


def assert_snapshots_on_their_branches(hub, output_dir: Path) -> None:
    """Each snapshot folder is on its branch byte for byte, model card included; `main` has the end snapshot."""
    repo = hub.repo(REPO_ID)
    assert set(repo.branches) == {"main", *SNAPSHOTS}
    for name in SNAPSHOTS:
        files = repo.files(name)
        files.pop(".gitattributes")
        assert files == folder_files(output_dir / SNAPSHOTS_DIR / name)
    assert repo.files("main") == repo.files("end")
    assert hub.unknown_routes == []


def assert_token_in_no_file_and_no_output(run: subprocess.CompletedProcess, output_dir: Path) -> None:
    """The token given on the command line is in no file the run wrote and nowhere in its output.

    The files are those under `output_dir` and under HF_HOME (the Hub cache and settings that the run uses).
    """
    folders = (output_dir, Path(os.environ["HF_HOME"]))
    files = [path for folder in folders for path in folder.rglob("*") if path.is_file()]
    assert [path for path in files if HUB_TOKEN.encode() in path.read_bytes()] == []
    assert HUB_TOKEN not in run.stdout and HUB_TOKEN not in run.stderr
    # The places that would hold it, checked directly: each checkpoint's pickled TrainingArguments...
    checkpoint_args = sorted(output_dir.glob("checkpoint-*/training_args.bin"))
    assert checkpoint_args
    for path in checkpoint_args:
        arguments = torch.load(path, weights_only=False)
        assert arguments.hub_token is None and arguments.push_to_hub is False
    # ...and each snapshot's saved arguments (where `TrainingArguments.to_dict` writes a placeholder anyway).
    for name in SNAPSHOTS:
        arguments = json.loads((output_dir / SNAPSHOTS_DIR / name / RUN_ARGUMENTS_FILE).read_text())
        assert arguments["TrainingArguments"]["hub_token"] == "<HUB_TOKEN>"


def test_each_snapshot_lands_on_its_branch_with_its_card_and_loads_in_a_fresh_process(
    hub_env, prepared_data, tmp_path
):
    output_dir = tmp_path / "out"

    run = run_mlm(prepared_data, output_dir)

    assert_snapshots_on_their_branches(hub_env, output_dir)
    repo = hub_env.repo(REPO_ID)
    for name, marker in SNAPSHOTS.items():
        card = ModelCard(repo.files(name)["README.md"].decode())
        info = SnapshotInfo.load(output_dir / SNAPSHOTS_DIR / name)
        metadata = card.data.budget_bert
        assert metadata["snapshot"] == name and metadata.get("marker") == marker
        assert metadata["global_step"] == info.global_step > 0
        assert metadata["budget_seconds"] == BUDGET_SECONDS
        assert f'revision="{name}"' in card.text
        assert f"--hub_token {shlex.quote('<HUB_TOKEN>')}" in card.text
        assert f"Pushed snapshot {name} to {REPO_ID}@{name}." in run.stdout
    assert_token_in_no_file_and_no_output(run, output_dir)

    branches = [*SNAPSHOTS, "main"]
    loader = subprocess.run(
        [sys.executable, "-c", LOADER, REPO_ID, str(tmp_path), *branches], capture_output=True, text=True,
        cwd=tmp_path, timeout=180,
    )

    assert loader.returncode == 0, loader.stderr[-3000:]
    loaded = json.loads((tmp_path / "loaded.json").read_text())
    assert loaded["imported_budget_bert"] is False
    for branch in branches:
        assert loaded["classes"][branch].startswith("transformers_modules.")
        assert loaded["classes"][branch].endswith("modeling_budget_bert.BudgetBertForMaskedLM")
        local = load_file(output_dir / SNAPSHOTS_DIR / ("end" if branch == "main" else branch) / "model.safetensors")
        weights = load_file(tmp_path / f"{branch}.safetensors")
        assert local and all(torch.equal(weights[name], tensor) for name, tensor in local.items())


def test_refused_and_dropped_uploads_are_retried_until_they_land_in_a_private_repo(hub_env, prepared_data, tmp_path):
    hub_env.inject_fault("commit", times=1, status=500)
    hub_env.inject_fault("commit", times=1, status=None)  # the connection is dropped
    output_dir = tmp_path / "out"

    run = run_mlm(prepared_data, output_dir, "--hub_private_repo", "True")

    commits = [status for method, path, status in hub_env.requests_of("/commit/")]
    assert commits[:2] == [500, 0] and commits[2:] == [200] * 4  # 3 branches, and main
    assert "Server error '500 Internal Server Error'" in run.stdout
    assert "RemoteProtocolError: Server disconnected" in run.stdout
    assert run.stdout.count("failed (attempt 1/6); retrying in") == 2
    assert_snapshots_on_their_branches(hub_env, output_dir)
    assert hub_env.repo(REPO_ID).private
    assert "were not pushed" not in run.stdout
    assert_token_in_no_file_and_no_output(run, output_dir)


def test_a_hub_down_for_the_whole_run_leaves_the_snapshots_and_the_commands_to_push_them(
    hub_env, prepared_data, tmp_path, monkeypatch
):
    hub_env.down = True
    output_dir = tmp_path / "out"

    run = run_mlm(prepared_data, output_dir, "--hub_push_timeout", "2")

    assert hub_env.repos == {} and hub_env.requests and {status for _, _, status in hub_env.requests} == {0}
    # Training never waited for the Hub: it stopped within a step of its budget, by its own clock (waiting out a
    # push's 30-second backoff would have taken it past twice the budget).
    assert 1 <= SnapshotInfo.load(output_dir / SNAPSHOTS_DIR / "end").budget_fraction < 2
    for name in SNAPSHOTS:
        AutoModelForMaskedLM.from_pretrained(output_dir / SNAPSHOTS_DIR / name)
    assert f"3 snapshot(s) were not pushed to {REPO_ID}; they stay on disk:" in run.stdout
    marker = "push it later with: "
    commands = [line.split(marker, 1)[1] for line in run.stdout.splitlines() if marker in line]
    assert [shlex.split(command)[-1] for command in commands] == [
        str(output_dir / SNAPSHOTS_DIR / name) for name in SNAPSHOTS
    ]
    assert run.stdout.count("RemoteProtocolError: Server disconnected without sending a response.") >= 3
    assert_token_in_no_file_and_no_output(run, output_dir)

    # The Hub comes back: the listed commands, as they are, push the snapshots (the token from HF_TOKEN).
    hub_env.down = False
    monkeypatch.setenv("HF_TOKEN", HUB_TOKEN)
    for command in commands:
        argv = shlex.split(command)
        assert argv[:3] == ["python", "-m", "budget_bert.hub.push"]
        assert push.main(argv[3:]) == 0
    assert_snapshots_on_their_branches(hub_env, output_dir)


def test_a_preempted_run_waits_for_the_hub_only_its_preemption_timeout(hub_env, prepared_data, tmp_path):
    hub_env.down = True
    output_dir = tmp_path / "out"
    command = run_mlm_command(
        prepared_data, output_dir,
        # The end-of-training wait would outlast this test; a preempted run uses the second one.
        "--hub_push_timeout", "3600", "--hub_push_timeout_on_preemption", "0",
        budget_seconds=600, markers="0.005",
    )
    snapshot = output_dir / SNAPSHOTS_DIR / snapshot_name(0.005)
    returncode, output = preempt_run_mlm(command, snapshot.is_dir, "the first snapshot")
    assert returncode == EXIT_PREEMPTED, output[-3000:]
    assert "Preempted at step" in output
    assert f"1 snapshot(s) were not pushed to {REPO_ID}; they stay on disk:" in output
    assert "push it later with: " in output and str(snapshot) in output
