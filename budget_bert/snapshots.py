"""Where a run's finetuning snapshots live and how their folders and files are named.

Shared by the callback that writes the snapshots (`trainer_callbacks.finetune_snapshots`) and by the Hub code
that pushes them (`budget_bert.hub`), each snapshot to the branch named after its folder.
"""

SNAPSHOTS_DIR = "finetune_snapshots"
"""The folder under `output_dir` that holds one folder per snapshot."""
RUN_ARGUMENTS_FILE = "run_arguments.json"
"""The run's arguments (without secrets), in every snapshot folder."""
SNAPSHOT_INFO_FILE = "snapshot_info.json"
"""When the snapshot was taken (`trainer_callbacks.SnapshotInfo`), in every snapshot folder."""
END_SNAPSHOT_NAME = "end"
"""The folder (and branch) of the snapshot taken at the end of training."""


def snapshot_name(marker: float) -> str:
    """The folder name of the snapshot at `marker`, e.g. `marker-0.50`."""
    return f"marker-{marker:.2f}" if round(marker, 2) == marker else f"marker-{marker:g}"
