"""The model card (README.md with Hub YAML metadata) written into each snapshot before it is pushed.

The caller fills a `ModelCardInfo` with the snapshot's description (`trainer_callbacks.SnapshotInfo`) and the run's
state at the snapshot; the architecture is read from the snapshot's own `config.json` and weights, so the card
cannot disagree with the folder it describes.
"""

from __future__ import annotations

import json
import math
import os
import platform
import shlex
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import ModelCard, ModelCardData
from safetensors import safe_open
from transformers import TrainerState

from budget_bert.cooldown.cooldown_runs import COOLDOWN_SNAPSHOT_PREFIX
from budget_bert.hub.redaction import redact_secrets
from trainer_callbacks.schedule_record import SCHEDULE_FILE, ScheduleRecord
from trainer_callbacks.snapshots import SnapshotInfo


MODEL_CARD_NAME = "README.md"
PROJECT_URL = "https://github.com/IntelLabs/academic-budget-bert"


@dataclass
class ModelCardInfo:
    """The training state a snapshot's card reports; every field is optional ("not recorded" on the card).

    Args:
        snapshot: the snapshot's own description (marker, optimizer step, budget seconds used, budget), as written
            into its folder.
        tokens_seen: input tokens seen, over all processes (`TrainerState.num_input_tokens_seen`).
        eval_loss: the last validation loss before the snapshot.
        hardware: what trained the model, e.g. `describe_hardware(world_size)`.
        command_line: the command that started the run (`sys.argv`); secrets are redacted on the card.
    """

    snapshot: SnapshotInfo | None = None
    tokens_seen: int | None = None
    eval_loss: float | None = None
    hardware: str | None = None
    command_line: list[str] | None = None

    @classmethod
    def from_trainer_state(
        cls, state: TrainerState, snapshot: SnapshotInfo, *, world_size: int, command_line: Sequence[str]
    ) -> ModelCardInfo:
        """The card info of `snapshot`, taken now: tokens and the last eval loss come from `state`.

        `state.num_input_tokens_seen` counts only with `--include_num_input_tokens_seen`; 0 reads "not recorded".
        """
        eval_losses = [entry["eval_loss"] for entry in state.log_history if "eval_loss" in entry]
        return cls(
            snapshot=snapshot,
            tokens_seen=state.num_input_tokens_seen or None,
            eval_loss=eval_losses[-1] if eval_losses else None,
            hardware=describe_hardware(world_size),
            command_line=list(command_line),
        )


def describe_hardware(world_size: int = 1) -> str:
    """Describe the accelerators (or CPU) of this machine and the number of training processes."""
    if torch.cuda.is_available():
        names = Counter(torch.cuda.get_device_name(index) for index in range(torch.cuda.device_count()))
        devices = ", ".join(f"{count} x {name}" for name, count in names.items())
    else:
        devices = f"CPU {platform.processor() or platform.machine()} ({os.cpu_count()} cores)"
    processes = "1 process" if world_size == 1 else f"{world_size} processes"
    return f"{devices}; {processes}"


def count_parameters(snapshot_dir: str | os.PathLike) -> int | None:
    """The number of parameters stored in the snapshot's safetensors files, or None if it has none."""
    files = sorted(Path(snapshot_dir).glob("*.safetensors"))
    if not files:
        return None
    total = 0
    for file in files:
        with safe_open(file, framework="pt") as weights:
            for name in weights.keys():
                total += math.prod(weights.get_slice(name).get_shape())
    return total


def _format_duration(seconds: float | None) -> str | None:
    return None if seconds is None else str(timedelta(seconds=round(seconds)))


def _format_count(value: int | None) -> str | None:
    return None if value is None else f"{value:,}"


def _table(rows: list[tuple[str, Any]]) -> str:
    lines = ["| | |", "|---|---|"]
    lines += [f"| {label} | {'not recorded' if value is None else value} |" for label, value in rows]
    return "\n".join(lines)


def _learning_rate_schedule(schedule: dict[str, Any]) -> str | None:
    if "learning_rate" not in schedule:
        return None
    peak = f"peak {schedule['learning_rate']:g}"
    if schedule.get("lr_schedule") == "step":
        return f"by optimizer steps (`--lr_scheduler_type`), {peak}"
    described = f"{schedule.get('curve')} curve of the budget used, {schedule.get('warmup_proportion', 0):.0%} warmup"
    if schedule.get("curve") == "wsd":
        cooldown = schedule.get("cooldown_proportion", 0)
        described += f", {schedule.get('cooldown_shape')} cooldown over the last {cooldown:.0%}"
    return f"{described}, {peak}"


def _steps(steps: list[int]) -> str | None:
    if not steps:
        return None
    return f"{len(steps)}, at steps {steps[0]:,} to {steps[-1]:,}" if len(steps) > 1 else f"1, at step {steps[0]:,}"


def schedule_section(snapshot_dir: str | os.PathLike, repo_id: str, branch: str) -> str:
    """
    The card's summary of the schedule recorded in the snapshot (`budget_schedule.json`), with the flag that replays
    it; empty for a snapshot without one.
    """
    try:
        record = ScheduleRecord.load(Path(snapshot_dir) / SCHEDULE_FILE)
    except ValueError:
        return ""
    run = record.runs[-1] if record.runs else {}
    conditions = run.get("conditions", {})
    batch, processes = conditions.get("global_batch_size"), conditions.get("world_size")
    stop = f", the run stopped at step {record.stop_step:,}" if record.stop_step is not None else ""
    rows = [
        ("Learning rate", _learning_rate_schedule(run.get("schedule", {}))),
        ("Optimizer steps recorded", f"{record.first_step:,} to {record.last_step:,}{stop}"),
        ("Validations", _steps(record.validation_steps)),
        ("Snapshots", ", ".join(f"`{name}` at step {step:,}" for name, step in record.snapshot_steps.items()) or None),
        ("Training checkpoints", _steps(record.checkpoint_steps)),
        ("Global batch", None if batch is None else f"{batch:,} examples per step, {processes} process(es)"),
        ("Resumed", f"{len(record.runs) - 1} time(s)" if record.runs else None),
    ]
    if run.get("replay_of"):
        rows.append(("Replay of", f"`{run['replay_of']}`"))
    return f"""
## Schedule

{_table(rows)}

`{SCHEDULE_FILE}` on this branch records the budget clock's reading after every optimizer step. To replay the run
step for step on other hardware (the learning rate, validations, markers and the stop at the same steps, whatever its
speed), run its command line below with `--replay_schedule_from {repo_id}@{branch}`.
"""


def render_model_card(
    info: ModelCardInfo, *, snapshot_dir: str | os.PathLike, repo_id: str, branch: str, also_main: bool
) -> ModelCard:
    """Build the card of the snapshot in `snapshot_dir`, pushed to `repo_id` on `branch` (and `main`)."""
    config = json.loads((Path(snapshot_dir) / "config.json").read_text())
    remote_code = "auto_map" in config
    parameters = count_parameters(snapshot_dir)
    architecture = (config.get("architectures") or [config.get("model_type", "unknown")])[0]
    command = shlex.join(redact_secrets(info.command_line)) if info.command_line else None

    snapshot = info.snapshot
    recorded = {
        **({key: value for key, value in asdict(snapshot).items() if key != "name"} if snapshot else {}),
        "tokens_seen": info.tokens_seen,
        "eval_loss": info.eval_loss,
        "hardware": info.hardware,
    }
    card_data = ModelCardData(
        library_name="transformers",
        pipeline_tag="fill-mask",
        tags=["budget-bert", "fill-mask", *(["custom_code"] if remote_code else [])],
        budget_bert={
            "snapshot": branch,
            "architecture": architecture,
            **{key: value for key, value in recorded.items() if value is not None},
        },
    )

    budget_hours = snapshot.budget_seconds / 3600 if snapshot else None
    marker = snapshot.marker if snapshot else None
    if marker is not None:
        moment = f"at the time marker {marker:.2f} of the {budget_hours:g} h budget"
    elif snapshot is not None and snapshot.name.startswith(COOLDOWN_SNAPSHOT_PREFIX):
        moment = (f"at the end of a cooldown (`python -m budget_bert.cooldown`) of a marker checkpoint of a longer "
                  f"wsd run: it is the model that a wsd run with a {budget_hours:.4g} h budget gives")
    else:
        moment = "at the end of training"
    where = f"branch `{branch}`" + (" and on `main`" if also_main and branch != "main" else "")
    trust = ", trust_remote_code=True" if remote_code else ""
    training_rows = [
        ("Budget", None if budget_hours is None else f"{budget_hours:g} h"),
        ("Time marker", "end of training" if marker is None else f"{marker:.2f} of the budget"),
        ("Elapsed training time", _format_duration(snapshot.elapsed_seconds if snapshot else None)),
        ("Optimizer steps", _format_count(snapshot.global_step if snapshot else None)),
        ("Tokens seen", _format_count(info.tokens_seen)),
        ("Last evaluation loss", None if info.eval_loss is None else f"{info.eval_loss:.4f}"),
        ("Hardware", info.hardware),
    ]
    architecture_rows = [
        ("Architecture", f"`{architecture}` (model type `{config.get('model_type')}`)"),
        ("Layers", config.get("num_hidden_layers")),
        ("Hidden size", config.get("hidden_size")),
        ("Attention heads", config.get("num_attention_heads")),
        ("Intermediate size", config.get("intermediate_size")),
        ("Vocabulary size", _format_count(config.get("vocab_size"))),
        ("Maximum positions", config.get("max_position_embeddings")),
        ("Parameters", _format_count(parameters)),
    ]
    body = f"""
# {repo_id} ({branch})

A BERT-like masked language model pretrained within a fixed wall-clock budget with budget-bert, a
rebuild of [academic-budget-bert]({PROJECT_URL}) on the stock `transformers.Trainer`.
This snapshot was taken {moment}; it is on the {where} of this repository.

## Training state at this snapshot

{_table(training_rows)}

{schedule_section(snapshot_dir, repo_id, branch)}
## Architecture

{_table(architecture_rows)}

## How to use

```python
from transformers import AutoModelForMaskedLM, AutoModelForSequenceClassification, AutoTokenizer

tokenizer = AutoTokenizer.from_pretrained("{repo_id}", revision="{branch}")
model = AutoModelForMaskedLM.from_pretrained("{repo_id}", revision="{branch}"{trust})
# or, to finetune it on a classification task:
classifier = AutoModelForSequenceClassification.from_pretrained("{repo_id}", revision="{branch}"{trust}, num_labels=2)
```

Each snapshot of the run is on a branch named after it (`marker-0.50` for the snapshot at half the budget,
`end` for the end of training); `main` holds the final model.

## Command line

```
{command or "not recorded"}
```
"""
    return ModelCard(f"---\n{card_data.to_yaml()}\n---\n{body}")


def write_model_card(
    snapshot_dir: str | os.PathLike, info: ModelCardInfo, *, repo_id: str, branch: str, also_main: bool
) -> Path:
    """Render the card of `snapshot_dir` and save it there as README.md; returns its path."""
    card = render_model_card(info, snapshot_dir=snapshot_dir, repo_id=repo_id, branch=branch, also_main=also_main)
    path = Path(snapshot_dir) / MODEL_CARD_NAME
    card.save(path)
    return path
