"""Push existing snapshot folders (or all of a run's snapshots) to the Hub after the fact.

    python -m budget_bert.hub.push --hub_model_id me/bert-24h --snapshot_dirs out/finetune_snapshots/marker-0.50
    python -m budget_bert.hub.push --hub_model_id me/bert-24h --run_dir out

Each snapshot goes to the branch named after its folder, `end` to `main` as well, exactly as during training;
the folder is pushed as it is, with the model card written into it when it was snapshotted (a folder without
a README.md gets a card from its config and its `snapshot_info.json`). The token comes from `--hub_token`,
`HF_TOKEN` or `hf auth login`. Exits with status 1 if a snapshot could not be pushed, 2 (with one line per
problem) for bad arguments or folders.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path

from transformers import HfArgumentParser

from budget_bert.cli import UsageError, json_file_argv, raise_problems, run_cli, setup_logging
from budget_bert.hub.pusher import SnapshotPusher, default_card_info
from trainer_callbacks.snapshots import SNAPSHOT_INFO_FILE, SNAPSHOTS_DIR, snapshot_folders


@dataclass
class PushArguments:
    """What to push, where, and how hard to retry."""

    hub_model_id: str = field(metadata={"help": "The model repo to push to: `namespace/name`."})
    snapshot_dirs: list[str] = field(
        default_factory=list, metadata={"help": "Snapshot folders (save_pretrained folders) to push."}
    )
    run_dir: str | None = field(
        default=None,
        metadata={"help": f"A run's output_dir: push every snapshot under its {SNAPSHOTS_DIR}/ folder."},
    )
    branch: str | None = field(
        default=None,
        metadata={"help": "Branch to push to (a single snapshot only); default: the snapshot folder's name."},
    )
    also_main: bool | None = field(
        default=None, metadata={"help": "Push to `main` too (True or False); default: only the `end` snapshot does."}
    )
    hub_token: str | None = field(
        default=None, metadata={"help": "The Hub token; default: HF_TOKEN or the token saved by `hf auth login`."}
    )
    hub_private_repo: bool | None = field(
        default=None, metadata={"help": "Create the repo private (True) if it does not exist yet."}
    )
    max_attempts: int = field(default=3, metadata={"help": "Pushes of each snapshot before giving it up."})
    backoff_seconds: float = field(
        default=10.0, metadata={"help": "Wait before the second attempt; doubles at each failure."}
    )
    timeout: float | None = field(
        default=None, metadata={"help": "Give up on what has not landed after this many seconds (default: never)."}
    )

    def __post_init__(self):
        problems = []
        if bool(self.snapshot_dirs) == bool(self.run_dir):
            problems.append("give either --snapshot_dirs DIR [DIR ...] or --run_dir OUTPUT_DIR, not both or neither.")
        if self.run_dir and not self.snapshot_folders():
            problems.append(f"--run_dir {self.run_dir} has no snapshots in {Path(self.run_dir) / SNAPSHOTS_DIR}/.")
        if self.branch is not None and len(self.snapshot_folders()) != 1:
            problems.append("--branch names the branch of a single snapshot: give exactly one of --snapshot_dirs.")
        problems += [
            f"--snapshot_dirs {folder} is not a snapshot folder (no config.json)."
            for folder in self.snapshot_dirs if not (Path(folder) / "config.json").is_file()
        ]
        if self.max_attempts < 1:
            problems.append(f"--max_attempts must be at least 1, got {self.max_attempts}.")
        raise_problems(problems)

    def snapshot_folders(self) -> list[Path]:
        """The snapshot folders to push, in order (a run's snapshots sorted by name, `end` last)."""
        if self.snapshot_dirs:
            return [Path(folder) for folder in self.snapshot_dirs]
        return snapshot_folders(self.run_dir)


def main(argv: list[str] | None = None) -> int:
    """Push the snapshots named on the command line; returns the exit status (0: all pushed)."""
    setup_logging(logging.INFO)
    (args,) = HfArgumentParser(PushArguments).parse_args_into_dataclasses(args=json_file_argv(argv))
    cards = {}
    for folder in args.snapshot_folders():
        try:
            cards[folder] = default_card_info(folder)
        except (ValueError, TypeError) as error:
            raise UsageError(f"{folder}: its {SNAPSHOT_INFO_FILE} is unreadable ({error}); push a folder that a "
                             "run wrote, or give it a README.md model card") from None
    pusher = SnapshotPusher(
        args.hub_model_id,
        token=args.hub_token,
        private=args.hub_private_repo,
        max_attempts=args.max_attempts,
        backoff_seconds=args.backoff_seconds,
    )
    for folder, card_info in cards.items():
        pusher.submit(folder, branch=args.branch, also_main=args.also_main, card_info=card_info)
    report = pusher.close(timeout=args.timeout)
    for job in report.pushed:
        print(f"pushed {job.snapshot_dir} -> {report.repo_id}@{job.branch}" + (" and main" if job.also_main else ""))
    return 0 if report.all_pushed else 1


if __name__ == "__main__":
    sys.exit(run_cli("python -m budget_bert.hub.push", main))
