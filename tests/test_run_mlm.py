"""run_mlm.py end to end on the real clock, in real processes: budget, markers, resume, logs, DeepSpeed, bad input.

The seed README's example command, every flag as written (tiny model, tiny data, seconds of budget), runs with
DeepSpeed ZeRO-2 in fp16 on the CPU and is stopped by its early exit marker; a second run resumes it to the end of
the budget. Most tests check one promise each on these two runs; one more runs two processes with ZeRO-1.
"""

import importlib.util
import json
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForMaskedLM, AutoModelForSequenceClassification

from budget_bert import BudgetBertForMaskedLM, BudgetBertForSequenceClassification
from budget_bert.cli import UsageError
from budget_bert.pretraining.pretraining_arguments import parse_pretraining_args
from trainer_callbacks.lr_curves import lr_factor
from trainer_callbacks.snapshots import SnapshotInfo, load_snapshots
from pretraining_fixtures import (  # noqa: F401 - fixture
    REPO, TINY_MODEL_FLAGS, free_port, import_run_mlm, one_process_env, prepared_data,
)
from test_arguments import FP16, SEED_COMMAND


def seed_value(flag: str) -> str:
    """The value of `--flag` in the seed's command."""
    return SEED_COMMAND[SEED_COMMAND.index(f"--{flag}") + 1]


BUDGET_HOURS = 0.006  # 21.6 s
EARLY_EXIT_HOURS = 0.003  # the first run stops here; the resumed one goes on to the budget
MARKERS = (0.25, 0.75)  # the first before the early exit, the second usually after it
LEARNING_RATE = float(seed_value("lr"))
WARMUP = float(seed_value("warmup_proportion"))
JOB_NAME = seed_value("job_name")
HAS_TENSORBOARD = importlib.util.find_spec("tensorboard") is not None


def run_script(args, env=None) -> subprocess.CompletedProcess:
    """Run `python args...` from the repository root; fail with its output's tail unless it exits 0."""
    result = subprocess.run(
        [sys.executable, *map(str, args)], cwd=REPO, env={**os.environ, **(env or {})}, capture_output=True,
        text=True, timeout=300,
    )
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    return result


def read_json(path) -> dict:
    """The JSON file at `path`."""
    return json.loads(Path(path).read_text())


def read_snapshots(output_dir) -> dict[str, SnapshotInfo]:
    """{name: description} of the finished finetuning snapshots in `output_dir`."""
    return {info.name: info for info in load_snapshots(output_dir)}


def elapsed_by_step(log_history) -> dict[int, float]:
    """{step: budget seconds used when the step ended}, from the training logs (one per step here)."""
    return {entry["step"]: entry["budget_elapsed_hours"] * 3600 for entry in log_history if "loss" in entry}


def first_step_at_or_past(elapsed: dict[int, float], seconds: float) -> int:
    """The first step that ended with at least `seconds` of budget used."""
    return min(step for step, used in elapsed.items() if used >= seconds)


def seed_command(prepared, output_dir, **values) -> list[str]:
    """The seed README's pretraining command, every flag as written, with a tiny model, tiny data and `values`."""
    values = {
        "tokenizer_name": prepared.tokenizer, "dataset_path": prepared.dataset, "output_dir": output_dir,
        "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 128,
        "train_batch_size": 16, "train_micro_batch_size_per_gpu": 8, "print_steps": 1,
        "total_training_time": BUDGET_HOURS, "early_exit_time_marker": EARLY_EXIT_HOURS, **values,
    }
    # Where DeepSpeed cannot run fp16 on this CPU (parsing refuses it), the seed's command runs in bf16.
    argv = [token if FP16 or token != "--fp16" else "--bf16" for token in SEED_COMMAND]
    for flag, value in values.items():
        argv[argv.index(f"--{flag}") + 1] = str(value)
    # The seed's bare --deepspeed builds the DeepSpeed config from the flags, here for ZeRO-2.
    argv += ["--zero_stage", "2", "--finetune_time_markers", ",".join(map(str, MARKERS)), "--log_level", "info"]
    return ["run_mlm.py", *argv] + (["--report_to", "tensorboard"] if HAS_TENSORBOARD else [])


@pytest.fixture(scope="module")
def first_run(prepared_data, tmp_path_factory):
    """The seed's command stopped by its --early_exit_time_marker: its output, and its state as it left it."""
    output_dir = tmp_path_factory.mktemp("budget_run")
    result = run_script(seed_command(prepared_data, output_dir), env=one_process_env())
    state = read_json(output_dir / "trainer_state.json")
    checkpoint = output_dir / f"checkpoint-{state['global_step']}"
    snapshots = read_snapshots(output_dir)
    return dict(output_dir=output_dir, result=result, state=state, checkpoint=checkpoint, snapshots=snapshots)


@pytest.fixture(scope="module")
def resumed_run(first_run, prepared_data):
    """The first run continued with --resume_from_checkpoint to the end of the budget (the early exit moved there)."""
    output_dir = first_run["output_dir"]
    flags = seed_command(prepared_data, output_dir, early_exit_time_marker=BUDGET_HOURS)
    result = run_script(flags + ["--resume_from_checkpoint", first_run["checkpoint"]], env=one_process_env())
    state = read_json(output_dir / "trainer_state.json")
    return dict(output_dir=output_dir, result=result, state=state, snapshots=read_snapshots(output_dir))


def test_early_exit_stops_within_one_step_and_saves_a_checkpoint(first_run):
    state = first_run["state"]
    elapsed = elapsed_by_step(state["log_history"])
    assert len(elapsed) == state["global_step"]  # a training log at every step
    stop_step = first_step_at_or_past(elapsed, EARLY_EXIT_HOURS * 3600)
    assert stop_step == state["global_step"]  # stopped at the first step past the marker, not later
    # A DeepSpeed checkpoint: ZeRO's optimizer partition, the scheduler, the RNG states and the budget.
    checkpoint = first_run["checkpoint"]
    assert list((checkpoint / f"global_step{state['global_step']}").glob("*optim_states.pt"))
    assert (checkpoint / "scheduler.pt").is_file() and (checkpoint / "rng_state.pth").is_file()
    saved = read_json(checkpoint / "trainer_state.json")["stateful_callbacks"]["BudgetCallback"]
    assert saved["attributes"]["elapsed_seconds"] >= EARLY_EXIT_HOURS * 3600
    assert {"end", "marker-0.25"} <= first_run["snapshots"].keys()


def test_the_seed_command_trains_with_deepspeed_fp16_and_zero2(first_run, prepared_data):
    snapshot = first_run["output_dir"] / "finetune_snapshots" / "marker-0.25"  # written by the first run
    arguments = read_json(snapshot / "run_arguments.json")["TrainingArguments"]
    precision, dtype = ("fp16", "float16") if FP16 else ("bf16", "bfloat16")
    assert arguments[precision] and arguments["deepspeed"]["zero_optimization"]["stage"] == 2
    assert arguments["gradient_accumulation_steps"] == 2  # --train_batch_size 16 / (8 per process x 1 process)
    assert read_json(snapshot / "config.json")["dtype"] == dtype  # DeepSpeed's half precision trains a half model
    # The loss starts where a random model's does, ln(vocabulary): the loss scale is undone.
    first_loss = next(entry["loss"] for entry in first_run["state"]["log_history"] if "loss" in entry)
    assert abs(first_loss - math.log(prepared_data.vocab_size)) < 1.0


def test_markers_are_taken_at_the_first_step_past_them(first_run, resumed_run):
    elapsed = elapsed_by_step(resumed_run["state"]["log_history"])  # the resumed state carries the first run's logs
    for marker in MARKERS:
        info = resumed_run["snapshots"][f"marker-{marker:.2f}"]
        assert info.global_step == first_step_at_or_past(elapsed, marker * BUDGET_HOURS * 3600)
        assert info.budget_fraction >= marker


def test_resume_continues_the_budget_the_lr_and_the_markers(first_run, resumed_run):
    checkpoint_step = first_run["state"]["global_step"]
    saved = read_json(first_run["checkpoint"] / "trainer_state.json")["stateful_callbacks"]["BudgetCallback"]
    saved_elapsed = saved["attributes"]["elapsed_seconds"]
    history = resumed_run["state"]["log_history"]
    logs = [entry for entry in history if "loss" in entry and entry["step"] > checkpoint_step]
    assert logs and logs[0]["step"] == checkpoint_step + 1
    # The clock goes on from the saved seconds, not from zero ...
    assert logs[0]["budget_elapsed_hours"] * 3600 >= saved_elapsed
    # ... and the first resumed step runs at the rate of the budget read after the first run's last step, as it
    # would have without the stop.
    last_reading = saved["attributes"]["reading_seconds"]
    assert last_reading <= saved_elapsed
    assert logs[0]["learning_rate"] == pytest.approx(
        LEARNING_RATE * lr_factor(last_reading / (BUDGET_HOURS * 3600), WARMUP, "linear"), rel=1e-6
    )
    # The budget, not the early exit marker, ends the resumed run, at the first step past it.
    elapsed = elapsed_by_step(logs)
    assert first_step_at_or_past(elapsed, BUDGET_HOURS * 3600) == resumed_run["state"]["global_step"]
    # Markers the first run took are not taken again; the resumed run takes the others.
    taken_before = {name for name in first_run["snapshots"] if name.startswith("marker-")}
    for name in taken_before:
        assert resumed_run["snapshots"][name] == first_run["snapshots"][name]
    taken = re.findall(r"Finetuning snapshot \S+/(marker-[\d.]+) at step", resumed_run["result"].stdout)
    assert sorted(taken_before) + taken == [f"marker-{marker:.2f}" for marker in MARKERS]
    assert all(resumed_run["snapshots"][name].global_step > checkpoint_step for name in taken)
    assert resumed_run["snapshots"]["end"].global_step == resumed_run["state"]["global_step"]


def test_logs_carry_budget_lr_loss_and_tokens_per_second(first_run):
    training_logs = [entry for entry in first_run["state"]["log_history"] if "loss" in entry]
    for entry in training_logs:
        assert {"budget_elapsed_hours", "budget_fraction", "learning_rate", "tokens_per_second"} <= entry.keys()
        assert entry["tokens_per_second"] > 0 and math.isfinite(entry["loss"])
    assert any("eval_loss" in entry and "budget_fraction" in entry for entry in first_run["state"]["log_history"])


def test_progress_bar_shows_the_budget_lr_loss_and_tokens_per_second(first_run):
    bar = r"budget +[\d.]+%\|[^|\n]*\| "
    stderr = first_run["result"].stderr
    text = r"\d+:\d\d:\d\d used, \d+:\d\d:\d\d left, step \d+, lr [\d.e-]+, loss [\d.]+, tok/s [\d,]+"
    assert re.search(bar + text, stderr)
    assert not re.search(bar + ",", stderr)  # the text starts right after the bar


@pytest.mark.skipif(not HAS_TENSORBOARD, reason="tensorboard is not installed")
def test_tensorboard_gets_the_budget_keys_in_a_folder_named_after_the_job(first_run, resumed_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(first_run["output_dir"] / "runs" / JOB_NAME))
    events.Reload()
    scalars = events.Tags()["scalars"]
    for key in ("train/budget_fraction", "train/budget_elapsed_hours", "train/tokens_per_second", "train/loss",
                "train/learning_rate", "eval/loss"):
        assert key in scalars
    # Both runs write to the one folder, so the resumed run continues the curves.
    steps = [event.step for event in events.Scalars("train/budget_fraction")]
    assert max(steps) == resumed_run["state"]["global_step"] and min(steps) == 1


def test_snapshots_load_with_the_auto_classes(resumed_run):
    snapshots = resumed_run["output_dir"] / "finetune_snapshots"
    assert isinstance(AutoModelForMaskedLM.from_pretrained(snapshots / "end"), BudgetBertForMaskedLM)
    classifier = AutoModelForSequenceClassification.from_pretrained(snapshots / "marker-0.25", num_labels=3)
    assert isinstance(classifier, BudgetBertForSequenceClassification)
    arguments = read_json(snapshots / "end" / "run_arguments.json")
    assert arguments["TrainingArguments"]["run_name"] == JOB_NAME


# Loads a snapshot where budget_bert cannot be imported, with the code saved in the folder, and prints its logits.
LOAD_WITHOUT_BUDGET_BERT = """
import importlib.abc, sys
import torch

class NoProjectImports(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in ("budget_bert", "trainer_callbacks"):
            raise ModuleNotFoundError(f"{name} is blocked: the snapshot must load without it")

sys.meta_path.insert(0, NoProjectImports())
from transformers import AutoModelForMaskedLM, AutoModelForSequenceClassification

path = sys.argv[1]
classifier = AutoModelForSequenceClassification.from_pretrained(path, trust_remote_code=True, num_labels=2)
model = AutoModelForMaskedLM.from_pretrained(path, trust_remote_code=True).eval()
with torch.no_grad():
    logits = model(input_ids=torch.arange(5, 13)[None]).logits
print(type(model).__name__, type(classifier).__name__, logits.double().sum().item())
"""


def test_snapshot_loads_with_remote_code_where_budget_bert_is_not_importable(resumed_run, tmp_path):
    snapshot = resumed_run["output_dir"] / "finetune_snapshots" / "end"
    result = run_script(["-c", LOAD_WITHOUT_BUDGET_BERT, snapshot], env={"HF_MODULES_CACHE": str(tmp_path)})
    model_class, classifier_class, logits_sum = result.stdout.split()[-3:]
    assert (model_class, classifier_class) == ("BudgetBertForMaskedLM", "BudgetBertForSequenceClassification")
    model = AutoModelForMaskedLM.from_pretrained(snapshot).eval()
    with torch.no_grad():
        expected = model(input_ids=torch.arange(5, 13)[None]).logits.double().sum().item()
    assert float(logits_sum) == pytest.approx(expected, rel=1e-5)


@pytest.mark.skipif(torch.cuda.is_available(), reason="two CPU processes; on a GPU machine they would share a GPU")
def test_two_processes_with_zero1_stop_at_the_same_step_and_save_once(first_run, prepared_data, tmp_path):
    output_dir = tmp_path / "out"
    # An earlier run's checkpoint there: --overwrite_output_dir starts afresh all the same.
    output_dir.mkdir()
    shutil.copytree(first_run["checkpoint"], output_dir / first_run["checkpoint"].name)
    command = [
        "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", free_port(), "run_mlm.py",
        # Raw text prepared on the fly (by the main process first, then read from the cache by the other).
        "--train_file", prepared_data.corpus, "--tokenizer_name", prepared_data.tokenizer, "--max_seq_length", "64",
        "--num_shards", "4", "--dataset_cache_dir", tmp_path / "cache",
        "--output_dir", output_dir, "--overwrite_output_dir", *TINY_MODEL_FLAGS, "--lr", "1e-3",
        "--train_micro_batch_size_per_gpu", "8", "--train_batch_size", "32", "--total_training_time", "0.003",
        "--finetune_time_markers", "0.5", "--deepspeed", "ds_configs/zero1.json", "--print_steps", "2",
        "--disable_tqdm", "true",
        # Both processes log, so that each one's stop and snapshots can be counted.
        "--log_level", "info", "--log_level_replica", "info",
    ]
    result = run_script(command, env={"OMP_NUM_THREADS": "1"})
    output = result.stdout + result.stderr
    state = read_json(output_dir / "trainer_state.json")

    assert state["log_history"][0]["step"] == 2  # a resumed state would begin with the earlier run's step 1
    # Both ranks stop at the same step: rank 0's clock decides for both.
    assert re.findall(r"Budget spent at step (\d+)", output) == [str(state["global_step"])] * 2
    # Each snapshot is written once, by rank 0.
    snapshots = re.findall(r"Finetuning snapshot \S+/finetune_snapshots/(\S+) at step", output)
    assert sorted(snapshots) == ["end", "marker-0.50"]
    # The loss is a mean over both ranks' tokens, not their sum: a fresh model starts near ln(vocabulary).
    losses = [entry["loss"] for entry in state["log_history"] if "loss" in entry]
    assert abs(losses[0] - math.log(prepared_data.vocab_size)) < 1.0
    assert all(math.isfinite(loss) for loss in losses)
    arguments = read_json(output_dir / "finetune_snapshots" / "end" / "run_arguments.json")
    assert arguments["TrainingArguments"]["gradient_accumulation_steps"] == 2  # 32 = 8 x 2 processes x 2 steps
    assert arguments["TrainingArguments"]["deepspeed"] == "ds_configs/zero1.json"
    assert arguments["DataArguments"]["train_file"] == [str(prepared_data.corpus)]
    # The printed logs (--disable_tqdm) come after the budget keys are added.
    assert re.search(r"\{'loss': .*'budget_fraction'", result.stdout)


def test_bad_flags_are_refused_in_one_line_each_before_anything_starts(prepared_data, tmp_path):
    broken = tmp_path / "ds.json"
    broken.write_text("{not json")
    argv = [
        "run_mlm.py", "--dataset_path", prepared_data.dataset, "--output_dir", tmp_path / "out",
        "--total_training_time", "1", "--early_exit_time_marker", "2", "--finetune_time_markers", "0.9,0.5",
        "--curve", "cosine", "--train_batch_size", "30", "--train_micro_batch_size_per_gpu", "8",
        "--deepspeed", broken,
    ]
    result = subprocess.run([sys.executable, *map(str, argv)], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    problems = [line for line in result.stderr.splitlines() if line.startswith("run_mlm.py: error: ")]
    for flag in ("--early_exit_time_marker", "--finetune_time_markers", "--curve", "--train_batch_size", "--deepspeed"):
        assert sum(line.startswith(f"run_mlm.py: error: {flag}") for line in problems) == 1, (flag, result.stderr)
    assert not (tmp_path / "out").exists()


def test_missing_data_is_refused_in_one_line(tmp_path):
    argv = ["run_mlm.py", "--dataset_path", tmp_path / "nowhere", "--output_dir", tmp_path / "out"]
    result = subprocess.run([sys.executable, *map(str, argv)], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        f"run_mlm.py: error: --dataset_path {tmp_path / 'nowhere'}: no such folder; prepare it with prepare_data.py "
        f"--output_dir {tmp_path / 'nowhere'}"
    )
    assert "Traceback" not in result.stderr


def test_log_level_debug_shows_the_traceback_of_an_expected_error(tmp_path):
    argv = ["run_mlm.py", "--dataset_path", tmp_path / "nowhere", "--output_dir", tmp_path / "out", "--log_level",
            "debug"]
    result = subprocess.run([sys.executable, *map(str, argv)], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and "Traceback" in result.stderr and "UsageError: --dataset_path" in result.stderr


@pytest.mark.parametrize(
    ("data_flags", "message"),
    [
        (["--dataset_path", "{empty_dir}"], "--dataset_path .* is not prepared data"),
        (["--train_file", "{empty_file}", "--tokenizer_name", "{tokenizer}"], r"--train_file \S+empty.txt: empty"),
    ],
)
def test_empty_data_is_refused_in_one_line(data_flags, message, prepared_data, tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty.txt").write_text("")
    paths = dict(empty_dir=tmp_path / "empty", empty_file=tmp_path / "empty.txt", tokenizer=prepared_data.tokenizer)
    argv = [flag.format(**paths) for flag in data_flags] + [
        "--output_dir", str(tmp_path / "out"), "--dataset_cache_dir", str(tmp_path / "cache"), *TINY_MODEL_FLAGS,
    ]
    with pytest.raises(UsageError) as error:
        import_run_mlm().main(argv)
    assert len(error.value.problems) == 1 and "\n" not in error.value.problems[0]
    assert re.match(message, error.value.problems[0])


@pytest.mark.skipif(torch.cuda.is_available(), reason="fp16 autocast exists on a GPU")
def test_fp16_without_deepspeed_on_the_cpu_is_refused(prepared_data, tmp_path):
    # accelerate would turn it off without a word and train in fp32.
    with pytest.raises(UsageError, match="--fp16 on the CPU needs --deepspeed"):
        parse_pretraining_args(["--dataset_path", str(prepared_data.dataset), "--output_dir", str(tmp_path), "--fp16"])


def test_job_and_project_names_reach_the_trackers(prepared_data, tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_PROJECT", raising=False)
    argv = ["--dataset_path", str(prepared_data.dataset), "--output_dir", str(tmp_path), "--job_name", "job",
            "--project_name", "project"]
    assert parse_pretraining_args(argv).training.run_name == "job" and os.environ["WANDB_PROJECT"] == "project"
