"""The run report on a synthetic run_mlm.py output folder: what it reads, plots and summarises."""

import json
import math
import shutil

import pytest
from matplotlib.image import imread

from budget_bert.report.run_report import (
    PLOTS,
    REPORT_DIR,
    REPORT_FILE,
    load_run,
    main,
    metric_figure,
    write_report,
)
from trainer_callbacks import BudgetCallback, BudgetClock, SnapshotInfo


BUDGET_SECONDS = 120.0
ELAPSED_SECONDS = 121.5
TOKENS = 48_600
SNAPSHOTS = {  # name: (marker, step, elapsed seconds)
    "marker-0.50": (0.5, 10, 61.0),
    "marker-0.90": (0.9, 18, 109.0),
    "end": (None, 20, 121.5),
}


def _log(step, seconds, **values):
    return {"step": step, "budget_elapsed_hours": seconds / 3600, "budget_fraction": seconds / BUDGET_SECONDS,
            **values}


def write_run(folder, with_eval=True):
    """A run_mlm.py output folder as the budget callbacks leave it: 20 steps, 5 validations, 3 snapshots."""
    history = []
    for step in range(2, 21, 2):
        seconds = step * 6.0
        history.append(_log(step, seconds, loss=8.0 - 0.1 * step, learning_rate=1e-3 * (1 - step / 21),
                            tokens_per_second=400.0 + step, grad_norm=1.0))
        if with_eval and step % 4 == 0:
            history.append(_log(step, seconds, eval_loss=8.1 - 0.1 * step, eval_runtime=0.5))
    history.append(_log(20, ELAPSED_SECONDS, train_loss=7.0, train_runtime=ELAPSED_SECONDS))
    state = {
        "global_step": 20,
        "num_input_tokens_seen": TOKENS,
        "log_history": history,
        "stateful_callbacks": {
            "BudgetCallback": BudgetCallback(BudgetClock(BUDGET_SECONDS, elapsed_before=ELAPSED_SECONDS)).state(),
        },
    }
    folder.mkdir(parents=True)
    (folder / "trainer_state.json").write_text(json.dumps(state))
    for name, (marker, step, seconds) in SNAPSHOTS.items():
        snapshot = folder / "finetune_snapshots" / name
        snapshot.mkdir(parents=True)
        (snapshot / "config.json").write_text("{}")
        SnapshotInfo(name, marker, step, seconds, BUDGET_SECONDS).save(snapshot)
    return folder


@pytest.fixture
def run_dir(tmp_path):
    return write_run(tmp_path / "run")


def test_load_run_reads_state_budget_and_snapshots(run_dir):
    run = load_run(run_dir)
    assert run.global_step == 20
    assert run.budget_seconds == BUDGET_SECONDS and run.elapsed_seconds == ELAPSED_SECONDS
    assert run.tokens_per_second == pytest.approx(TOKENS / ELAPSED_SECONDS)
    assert run.final_train_loss == pytest.approx(6.0)
    assert run.final_eval_loss == pytest.approx(6.1)
    assert run.final_perplexity == pytest.approx(math.exp(6.1))
    assert [info.name for info in run.snapshots] == ["marker-0.50", "marker-0.90", "end"]


def test_report_writes_valid_pngs_and_summary(run_dir):
    path = write_report(run_dir)

    assert path == run_dir / REPORT_DIR / REPORT_FILE
    for name in PLOTS:
        image = imread(run_dir / REPORT_DIR / name)  # raises on a broken PNG
        assert image.shape[0] > 100 and image.shape[1] > 100
        assert (run_dir / REPORT_DIR / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = path.read_text()
    for expected in (
        "| budget | 2 minutes (0.0333 h) |",
        "101% of the budget",
        "| optimizer steps | 20 |",
        "| tokens seen | 48,600 |",
        f"| tokens/s | {TOKENS / ELAPSED_SECONDS:,.0f} ",
        "| final eval loss | 6.1000 (perplexity 445.9, step 20, 5 validations) |",
        "| `finetune_snapshots/marker-0.50` | 0.5 | 10 |",
        "| `finetune_snapshots/end` | end | 20 |",
        "![learning rate](learning_rate.png)",
    ):
        assert expected in text


def test_markers_are_drawn_at_snapshot_time_and_step(run_dir):
    run = load_run(run_dir)
    figure = metric_figure(run, "loss", "training loss")
    time_axes, step_axes = figure.axes

    def vertical_lines(axes):
        return sorted(line.get_xdata()[0] for line in axes.lines if len(set(line.get_xdata())) == 1)

    # A two-minute budget is shown in minutes; the budget's end is a line too.
    assert time_axes.get_xlabel() == "elapsed budget time (minutes)"
    assert vertical_lines(time_axes) == pytest.approx(sorted([61.0 / 60, 109.0 / 60, 121.5 / 60, 2.0]))
    assert vertical_lines(step_axes) == [10, 18, 20]
    curve = step_axes.lines[0]
    assert list(curve.get_xdata()) == list(range(2, 21, 2))


def test_run_without_validation_has_no_eval_plot(tmp_path):
    run_dir = write_run(tmp_path / "run", with_eval=False)
    text = write_report(run_dir).read_text()
    assert not (run_dir / REPORT_DIR / "eval_loss.png").exists()
    assert "eval_loss.png" not in text
    assert "| final eval loss | n/a |" in text


def test_unfinished_run_is_read_from_its_last_checkpoint(run_dir):
    for step in (10, 20):
        (run_dir / f"checkpoint-{step}").mkdir()
    shutil.move(run_dir / "trainer_state.json", run_dir / "checkpoint-20" / "trainer_state.json")
    run = load_run(run_dir)
    assert run.state_file == run_dir / "checkpoint-20" / "trainer_state.json"
    assert run.global_step == 20


def test_folder_without_a_run_is_refused(tmp_path):
    with pytest.raises(ValueError, match="no trainer_state.json and no checkpoint-N"):
        load_run(tmp_path)


def test_command_line(run_dir, tmp_path, capsys):
    main([str(run_dir), "--report_dir", str(tmp_path / "elsewhere")])
    assert capsys.readouterr().out.strip() == str(tmp_path / "elsewhere" / REPORT_FILE)
    assert (tmp_path / "elsewhere" / "training_loss.png").is_file()

    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path / "missing")])
    assert exit_info.value.code == 2
    assert "no trainer_state.json" in capsys.readouterr().err
