"""Cooldowns of a wsd run (`python -m budget_bert.cooldown`), on the tiny pretraining data and a stepped clock.

One `run_mlm.py --curve wsd` run (4 s of budget a step, 18 steps) keeps marker checkpoints at 0.2, 0.4, 0.6 and
0.9 of its budget; the tests cool them down, compare with a fresh run of the cooled-down budget, preempt and
resume a cooldown, refuse markers outside the constant phase, load the result in a fresh process, push it to the fake
Hub and plot it.
"""

import json
import shlex
import subprocess
import sys

import pytest

from budget_bert.cli import UsageError
from budget_bert.cooldown.cooldown_command import main as cooldown_main, resume_line
from budget_bert.cooldown.cooldown_runs import cooldown_name, plan_cooldowns
from budget_bert.pretraining.pretraining_arguments import COMMAND_LINE_RECORD
from budget_bert.pretraining.resume import EXIT_PREEMPTED
from budget_bert.report.run_report import write_report
from hub_server import HUB_TOKEN, hub_env, hub_server  # noqa: F401 - fixtures
from pretraining_fixtures import REPO, TINY_MODEL_FLAGS, import_run_mlm, prepared_data  # noqa: F401 - fixture
from trainer_callbacks import BudgetClock, ManualTime
from trainer_callbacks.checkpoints import incompleteness
from trainer_callbacks.snapshots import MARKER_CHECKPOINTS_DIR, RUN_ARGUMENTS_FILE, SnapshotInfo

SECONDS_PER_STEP = 4.0
BUDGET_HOURS = 0.02  # 72 s: 18 steps
WARMUP, COOLDOWN = 0.1, 0.2  # the constant phase: 7.2 s to 57.6 s
MARKERS = "0.2,0.4,0.6,0.9"


class SteppedClock(BudgetClock):
    """A budget clock on which every optimizer step takes `SECONDS_PER_STEP`; interrupted (as by SIGTERM) at the
    tick `interrupt_at` when given."""

    def __init__(self, budget_seconds, interrupt_at=None):
        self.time = ManualTime()
        super().__init__(budget_seconds, time_fn=self.time)
        self.ticks, self.interrupt_at = 0, interrupt_at

    def tick(self):
        self.time.advance(SECONDS_PER_STEP)
        self.ticks += 1
        if self.ticks == self.interrupt_at:
            self.request_interrupt()
        return super().tick()


def run_flags(data, output_dir, hours=BUDGET_HOURS, markers=MARKERS):
    return [
        "--dataset_path", str(data.dataset), "--output_dir", str(output_dir), *TINY_MODEL_FLAGS,
        "--lr", "1e-3", "--train_micro_batch_size_per_gpu", "8", "--print_steps", "1", "--disable_tqdm", "true",
        "--lr_schedule", "time", "--curve", "wsd", "--warmup_proportion", str(WARMUP),
        "--cooldown_proportion", str(COOLDOWN), "--total_training_time", str(hours),
        *(["--finetune_time_markers", markers] if markers else []),
        "--num_epochs_between_checkpoints", "1", "--save_total_limit", "1", "--seed", "7",
        "--hub_token", "hf_not_a_real_token",
    ]


@pytest.fixture(scope="module")
def wsd_run(prepared_data, tmp_path_factory):  # noqa: F811 - fixture
    """The output folder of the wsd run, finished."""
    output_dir = tmp_path_factory.mktemp("wsd_run")
    import_run_mlm().main(run_flags(prepared_data, output_dir), clock=SteppedClock(BUDGET_HOURS * 3600))
    return output_dir


def stepped(budget_seconds):
    return SteppedClock(budget_seconds)


def lr_by_step(output_dir):
    state = json.loads((output_dir / "trainer_state.json").read_text())
    return {entry["step"]: entry["learning_rate"] for entry in state["log_history"] if "learning_rate" in entry}


def test_marker_checkpoints_of_a_wsd_run_are_complete_and_record_the_command(wsd_run):
    kept = sorted(p.name for p in (wsd_run / MARKER_CHECKPOINTS_DIR).iterdir())
    assert kept == ["marker-0.20", "marker-0.40", "marker-0.60", "marker-0.90"]
    for name in kept:
        assert incompleteness(wsd_run / MARKER_CHECKPOINTS_DIR / name) is None
    arguments = json.loads((wsd_run / MARKER_CHECKPOINTS_DIR / "marker-0.40" / RUN_ARGUMENTS_FILE).read_text())
    command = arguments[COMMAND_LINE_RECORD]
    assert command[0] == "run_mlm.py" and "--curve" in command and "hf_not_a_real_token" not in json.dumps(arguments)
    assert len(list(wsd_run.glob("checkpoint-*"))) == 1  # --save_total_limit 1 rotated the others away


def test_a_cooldown_follows_the_lr_of_a_fresh_wsd_run_of_its_budget(wsd_run, prepared_data, tmp_path):  # noqa: F811
    (cooldown,) = cooldown_main([str(wsd_run), "--markers", "0.4"], clock_factory=stepped)
    marker_step = 8  # 0.4 of 72 s is 28.8 s: the step ending at 32 s
    assert cooldown.start_seconds == pytest.approx(marker_step * SECONDS_PER_STEP)
    assert cooldown.budget_seconds == pytest.approx(32 / (1 - COOLDOWN))
    assert cooldown.output_dir == wsd_run / "cooldown" / cooldown_name(40.0) == wsd_run / "cooldown" / "budget-0.01111h"

    fresh = tmp_path / "fresh"
    import_run_mlm().main(
        run_flags(prepared_data, fresh, hours=repr(cooldown.budget_seconds / 3600), markers=None),
        clock=SteppedClock(cooldown.budget_seconds),
    )
    cooled, separate = lr_by_step(cooldown.output_dir), lr_by_step(fresh)
    assert max(cooled) == max(separate) == 10  # both stop at the budget, 40 s
    after = range(marker_step + 1, 11)
    assert [cooled[step] for step in after] == pytest.approx([separate[step] for step in after])
    # The marker's step and the next one run at the peak rate (the next one starts the cooldown), then it falls.
    assert cooled[marker_step] == cooled[marker_step + 1] == pytest.approx(1e-3)
    assert 0 < cooled[marker_step + 2] < 1e-3

    info = SnapshotInfo.load(cooldown.snapshot_dir)
    assert cooldown.snapshot_dir.name == "cooldown-budget-0.01111h" and info.marker is None
    assert info.budget_seconds == pytest.approx(40.0) and info.global_step == 10


def test_the_cooled_down_model_loads_with_the_auto_classes_in_a_fresh_process(wsd_run):
    (cooldown,) = cooldown_main([str(wsd_run), "--markers", "0.4"], clock_factory=stepped)  # finished: skipped
    code = (
        "import sys; from transformers import AutoModelForMaskedLM, AutoModelForSequenceClassification, AutoTokenizer;"
        "path = sys.argv[1]; AutoTokenizer.from_pretrained(path, trust_remote_code=True);"
        "print(type(AutoModelForMaskedLM.from_pretrained(path, trust_remote_code=True)).__name__);"
        "AutoModelForSequenceClassification.from_pretrained(path, trust_remote_code=True, num_labels=2)"
    )
    result = subprocess.run([sys.executable, "-c", code, str(cooldown.snapshot_dir)], cwd=REPO.parent,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == "BudgetBertForMaskedLM"


def test_a_preempted_cooldown_exits_75_and_the_same_command_resumes_it(wsd_run, capsys):
    command = [str(wsd_run), "--markers", "0.6"]
    with pytest.raises(SystemExit) as stopped:
        cooldown_main(command, clock_factory=lambda budget: SteppedClock(budget, interrupt_at=2))
    assert stopped.value.code == EXIT_PREEMPTED
    assert "Resume with: python -m budget_bert.cooldown" in capsys.readouterr().out

    # marker 0.6: 43.2 s, the step ending at 44 s (11); budget 55 s: steps 12-14; preempted at 13, resumed.
    (cooldown,) = cooldown_main(command, clock_factory=stepped)
    rates = lr_by_step(cooldown.output_dir)
    assert max(rates) == 14 and SnapshotInfo.load(cooldown.snapshot_dir).global_step == 14
    assert rates[12] > rates[13] > rates[14] > 0


def test_markers_outside_the_constant_phase_are_refused(wsd_run, capsys):
    with pytest.raises(UsageError) as refused:
        plan_cooldowns(wsd_run, [0.9, 0.5])
    first, second = refused.value.problems
    assert "marker-0.90" in first and "inside the run's own cooldown (from 0.8)" in first
    assert "no marker checkpoint marker-0.50" in second

    from budget_bert.cooldown.cooldown_command import cli

    sys_argv = sys.argv
    sys.argv = ["budget_bert.cooldown", str(wsd_run), "--markers", "0.9"]
    try:
        with pytest.raises(SystemExit) as exited:
            cli()
    finally:
        sys.argv = sys_argv
    assert exited.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "marker-0.90" in lines[0]


def test_a_cooldown_share_that_would_reach_into_the_warmup_is_refused(wsd_run):
    with pytest.raises(UsageError, match="--cooldown_proportion 0.95"):
        plan_cooldowns(wsd_run, [0.4], cooldown_proportion=0.95)


def test_the_report_plots_the_budget_curve(wsd_run, monkeypatch):
    cooldown_main([str(wsd_run), "--markers", "0.4"], clock_factory=stepped)
    report = write_report(wsd_run)
    text = report.read_text()
    assert (report.parent / "budget_curve.png").is_file()
    section = text[text.index("## Budget curve"):]
    for row in ("| `cooldown/budget-0.01111h/finetune_snapshots/cooldown-budget-0.01111h` | cooled down | 0.01111 |",
                "| `finetune_snapshots/marker-0.40` | marker snapshot | 0.008889 |",
                "| `finetune_snapshots/end` | end of the run | 0.02 |"):
        assert row in section

    import budget_bert.report.budget_curve as budget_curve

    monkeypatch.setattr(budget_curve, "masked_lm_loss", lambda *args: pytest.fail("not read from the cache"))
    assert write_report(wsd_run).read_text() == text


def test_push_to_hub_puts_the_cooled_down_model_on_a_branch_of_its_own(wsd_run, hub_env, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", HUB_TOKEN)
    repo_id = "fake-user/wsd-tiny"
    (cooldown,) = cooldown_main(
        [str(wsd_run), "--markers", "0.2", "--push_to_hub", "--hub_model_id", repo_id], clock_factory=stepped
    )
    # 0.2 of 72 s is 14.4 s: the step ending at 16 s; its cooldown's budget is 20 s.
    assert cooldown.snapshot_name == "cooldown-budget-0.005556h"
    repo = hub_env.repos[("model", repo_id)]
    assert sorted(repo.branches) == ["cooldown-budget-0.005556h", "main"]
    pushed = repo.files(cooldown.snapshot_name)
    assert pushed["model.safetensors"] == (cooldown.snapshot_dir / "model.safetensors").read_bytes()
    assert "model.safetensors" not in repo.files("main")  # main is for the run's own final model
    card = pushed["README.md"].decode()
    assert "the model that a wsd run with a 0.005556 h budget gives" in card  # the card names the equivalent budget


@pytest.mark.parametrize(
    "env, start",
    [
        ({}, ["python", "-m"]),
        ({"TORCHELASTIC_RUN_ID": "1", "LOCAL_WORLD_SIZE": "4"}, ["torchrun", "--nproc_per_node", "4", "-m"]),
        ({"LOCAL_SIZE": "2", "CROSS_SIZE": "1"}, ["deepspeed", "--num_gpus", "2", "--module"]),
    ],
)
def test_the_resume_line_names_the_launcher_and_the_module(env, start):
    line = resume_line(["out", "--markers", "0.4", "--local_rank=1"], env=env)
    assert shlex.split(line) == [*start, "budget_bert.cooldown", "out", "--markers", "0.4"]
