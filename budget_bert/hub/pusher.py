"""Push finetune snapshots to the Hub in the background, each on a branch of its own.

Training hands each snapshot folder to `SnapshotPusher.submit`, which writes the model card into the folder
and returns at once; a single daemon thread creates the repo and the branch and uploads the folder with
huggingface_hub (`create_repo`, `create_branch`, `upload_folder`). A failed push is retried with exponential
backoff while the other snapshots go ahead; at the end, `close(timeout)` waits a bounded time and lists what
did not land, with the command that pushes it later. Each snapshot that landed records where in a file of its
folder (`.hub_pushed.json`, never uploaded), so a resumed run pushes what an earlier, preempted run left behind
(`submit_unpushed`).

transformers' own `Trainer.push_to_hub` does not fit: it pushes the whole `output_dir` to one revision and
waits for the previous push before the next one, so a slow Hub would stall training.
"""

from __future__ import annotations

import heapq
import itertools
import json
import os
import shlex
import threading
import time
from dataclasses import dataclass, field
from operator import attrgetter
from pathlib import Path

from huggingface_hub import HfApi, get_token
from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled
from transformers.utils import logging

from budget_bert.hub.model_card import MODEL_CARD_NAME, ModelCardInfo, write_model_card
from budget_bert.hub.redaction import install_log_redaction, redact_text
from trainer_callbacks.snapshots import END_SNAPSHOT_NAME, SnapshotInfo, snapshot_folders


logger = logging.get_logger(__name__)

PUSH_COMMAND = "python -m budget_bert.hub.push"
# Statuses worth retrying among the 4xx: timeout, conflict (concurrent operation), locked, rate limited.
_RETRYABLE_CLIENT_STATUSES = (408, 409, 423, 429)
PUSH_RECORD_NAME = ".hub_pushed.json"
"""The file of a snapshot folder that lists the `repo_id@branch` revisions it was pushed to."""


def pushed_revisions(snapshot_dir: str | Path) -> set[str]:
    """The `repo_id@branch` revisions the snapshot folder was pushed to (none for a folder replaced since)."""
    try:
        return set(json.loads(Path(snapshot_dir, PUSH_RECORD_NAME).read_text())["pushed"])
    except (FileNotFoundError, ValueError, KeyError, TypeError):
        return set()


def _same_repo(recorded: str, repo_id: str) -> bool:
    # A repo named without its namespace is in the token owner's: `bert-24h` is the `me/bert-24h` the Hub returned.
    return recorded == repo_id or ("/" not in repo_id and recorded.split("/", 1)[-1] == repo_id)


def is_pushed(snapshot_dir: str | Path, repo_id: str, branch: str) -> bool:
    """Whether the snapshot folder landed on `repo_id@branch` (as recorded in its `.hub_pushed.json`)."""
    return any(
        _same_repo(recorded, repo_id) and pushed_branch == branch
        for recorded, _, pushed_branch in (revision.rpartition("@") for revision in pushed_revisions(snapshot_dir))
    )


def default_card_info(snapshot_dir: str | Path) -> ModelCardInfo | None:
    """What to write as the card of a snapshot pushed after the fact: nothing if it has one, else a card from
    its own description (`snapshot_info.json`)."""
    if Path(snapshot_dir, MODEL_CARD_NAME).is_file():
        return None
    return ModelCardInfo(snapshot=SnapshotInfo.load(snapshot_dir))


@dataclass
class PushJob:
    """One snapshot to push: its folder, its branch, whether `main` gets it too, its place in the order of
    submission, and how its pushes went."""

    snapshot_dir: Path
    branch: str
    also_main: bool
    submitted: int
    attempts: int = 0
    error: str | None = None

    def push_later_command(self, repo_id: str, private: bool | None) -> str:
        """The command that pushes this snapshot after the fact (the token comes from the environment)."""
        words = [*shlex.split(PUSH_COMMAND), "--hub_model_id", repo_id, "--snapshot_dirs", str(self.snapshot_dir)]
        if self.branch != self.snapshot_dir.name:
            words += ["--branch", self.branch]
        if self.also_main != (self.branch == END_SNAPSHOT_NAME):
            words += ["--also_main", str(self.also_main)]
        if private:
            words += ["--hub_private_repo", "True"]
        return shlex.join(words)


@dataclass
class PushReport:
    """What `SnapshotPusher.close` found: the snapshots that landed and those that did not."""

    repo_id: str
    pushed: list[PushJob] = field(default_factory=list)
    not_pushed: list[PushJob] = field(default_factory=list)

    @property
    def all_pushed(self) -> bool:
        """Whether every submitted snapshot landed."""
        return not self.not_pushed


def is_retryable(error: BaseException) -> bool:
    """Whether a failed push may succeed when tried again (network trouble, server errors, rate limits)."""
    if isinstance(error, OfflineModeIsEnabled):
        return False
    if isinstance(error, HfHubHTTPError) and error.response is not None:
        status = error.response.status_code
        return not (400 <= status < 500) or status in _RETRYABLE_CLIENT_STATUSES
    # Invalid arguments or metadata (e.g. a card the Hub rejects) fail the same way every time.
    return not isinstance(error, ValueError)


class SnapshotPusher:
    """Pushes snapshot folders to one Hub model repo from a background thread, retrying failures with backoff.

    Create it on the main process only. Each snapshot goes to a branch
    named after its folder (`marker-0.50`); the `end` snapshot also goes to `main`. Every branch mirrors its
    folder (less the folder's `.hub_pushed.json`): files that are not in the folder are deleted from the branch.

    Args:
        repo_id: the model repo, `namespace/name` (or `name`, in the token owner's namespace).
        token: the Hub token; None uses `HF_TOKEN` or the token saved by `hf auth login`. It is given to
            `HfApi` only, and (whichever it is) hidden from every log record from now on.
        private: whether to create the repo private (no effect on an existing repo).
        endpoint: the Hub URL; None uses `HF_ENDPOINT` or huggingface.co.
        max_attempts: pushes of one snapshot before it is given up (and listed at `close`).
        backoff_seconds: wait before the second attempt; it doubles at each failure...
        max_backoff_seconds: ...up to this cap.
    """

    def __init__(
        self,
        repo_id: str,
        *,
        token: str | None = None,
        private: bool | None = None,
        endpoint: str | None = None,
        max_attempts: int = 6,
        backoff_seconds: float = 30.0,
        max_backoff_seconds: float = 600.0,
    ):
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {max_attempts}.")
        # The token that will be used, also when it comes from HF_TOKEN or `hf auth login`, is hidden from logs.
        secret = token or get_token()
        install_log_redaction(secret)
        self.repo_id = repo_id
        self.private = private
        self.max_attempts = max_attempts
        self.backoff_seconds = backoff_seconds
        self.max_backoff_seconds = max_backoff_seconds
        self._api = HfApi(endpoint=endpoint, token=token)
        self._secrets = [secret] if secret else []
        self._repo_ready = False
        self._queue: list[tuple[float, int, PushJob]] = []  # heap of (due time, submission order, job)
        self._order = itertools.count()
        self._in_flight: PushJob | None = None
        self._pushed: list[PushJob] = []
        self._given_up: list[PushJob] = []
        self._closing = False
        self._stopped = False
        self._condition = threading.Condition()
        # A daemon thread: an upload stuck on the network must not keep the process alive after training.
        self._worker = threading.Thread(target=self._work, name="hub-snapshot-pusher", daemon=True)
        self._worker.start()

    def submit(
        self,
        snapshot_dir: str | Path,
        *,
        branch: str | None = None,
        also_main: bool | None = None,
        card_info: ModelCardInfo | None = None,
    ) -> None:
        """Queue a snapshot folder for pushing and return at once.

        Args:
            snapshot_dir: a `save_pretrained` folder (with its `config.json`); it must not change until pushed.
            branch: the branch to push to; defaults to the folder's name.
            also_main: whether to push it to `main` too; defaults to True for the `end` snapshot only.
            card_info: the training state to write into the folder's model card (README.md) first; None
                pushes the folder as it is.
        """
        snapshot_dir = Path(snapshot_dir).absolute()
        if not (snapshot_dir / "config.json").is_file():
            raise ValueError(f"{snapshot_dir} is not a snapshot folder: it has no config.json.")
        branch = branch or snapshot_dir.name
        also_main = branch == END_SNAPSHOT_NAME if also_main is None else also_main
        if card_info is not None:
            write_model_card(snapshot_dir, card_info, repo_id=self.repo_id, branch=branch, also_main=also_main)
        with self._condition:
            if self._closing:
                raise RuntimeError("SnapshotPusher.submit called after close().")
            job = PushJob(snapshot_dir, branch, also_main, submitted=next(self._order))
            heapq.heappush(self._queue, (time.monotonic(), job.submitted, job))
            self._condition.notify_all()
        logger.info(f"Queued snapshot {snapshot_dir.name} for {self.repo_id}@{branch}.")

    def submit_unpushed(self, run_dir: str | Path) -> list[Path]:
        """Queue every snapshot of the run in `run_dir` that has not landed in this repo, on its own branch (and
        `main` for `end`): what an earlier, preempted run of it left unpushed. Returns the folders queued."""
        folders = []
        for folder in snapshot_folders(run_dir):
            branches = [folder.name] + (["main"] if folder.name == END_SNAPSHOT_NAME else [])
            if not all(is_pushed(folder, self.repo_id, branch) for branch in branches):
                self.submit(folder, card_info=default_card_info(folder))
                folders.append(folder)
        if folders:
            logger.info(f"Pushing {len(folders)} snapshot(s) an earlier run of {run_dir} left unpushed.")
        return folders

    def close(self, timeout: float | None = 600.0) -> PushReport:
        """Wait up to `timeout` seconds (None: no limit) for the queued pushes, then report and stop.

        Snapshots waiting out a backoff are retried at once, and retries go on while waiting. What has not
        landed by then is logged as an error, with the command that pushes it later; the background thread is
        abandoned (a daemon thread, silent from then on).
        """
        with self._condition:
            self._closing = True
            # Training is over: the snapshots waiting out a backoff get their next attempt now.
            now = time.monotonic()
            self._queue = [(min(due, now), order, job) for due, order, job in self._queue]
            heapq.heapify(self._queue)
            self._condition.notify_all()
        self._worker.join(timeout)
        with self._condition:
            self._stopped = True
            self._condition.notify_all()
            waiting = [job for _, _, job in self._queue]
            in_flight = [self._in_flight] if self._in_flight is not None else []
            # Listed in the order submitted (the run's order of snapshots), whatever state each push ended in.
            submitted = attrgetter("submitted")
            pushed = sorted(self._pushed, key=submitted)
            not_pushed = sorted(self._given_up + in_flight + waiting, key=submitted)
            report = PushReport(self.repo_id, pushed, not_pushed)
        self._log_report(report)
        return report

    # ---- background thread -----------------------------------------------------------------------------
    def _work(self) -> None:
        while True:
            with self._condition:
                while not self._stopped:
                    if not self._queue:
                        if self._closing:
                            return
                        self._condition.wait()
                        continue
                    delay = self._queue[0][0] - time.monotonic()
                    if delay <= 0:
                        break
                    self._condition.wait(delay)
                if self._stopped:
                    return
                _, _, job = heapq.heappop(self._queue)
                self._in_flight = job
            error = self._attempt(job)
            with self._condition:
                if self._stopped:  # close() has already reported this job as not pushed
                    return
                self._in_flight = None
                if error is None:
                    self._pushed.append(job)
                    logger.info(f"Pushed snapshot {job.snapshot_dir.name} to {self.repo_id}@{job.branch}.")
                elif job.attempts < self.max_attempts and is_retryable(error):
                    delay = self._backoff(job.attempts)
                    heapq.heappush(self._queue, (time.monotonic() + delay, next(self._order), job))
                    logger.warning(
                        f"Push of snapshot {job.snapshot_dir.name} to {self.repo_id}@{job.branch} failed (attempt"
                        f" {job.attempts}/{self.max_attempts}); retrying in {delay:.3g} s, in the background."
                        f" {job.error}"
                    )
                else:
                    self._given_up.append(job)
                    logger.error(
                        f"Giving up pushing snapshot {job.snapshot_dir.name} to {self.repo_id}@{job.branch} after"
                        f" {job.attempts} attempt(s): {job.error}\nPush it later with:"
                        f" {job.push_later_command(self.repo_id, self.private)}"
                    )

    def _attempt(self, job: PushJob) -> Exception | None:
        """Push `job` once; return the error it failed with (its message, redacted, goes to `job.error`)."""
        job.attempts += 1
        try:
            self._push(job)
        except Exception as error:  # noqa: BLE001 - a failed push is retried or reported, never raised
            job.error = redact_text(f"{type(error).__name__}: {error}", self._secrets)
            return error
        job.error = None
        return None

    def _backoff(self, attempts: int) -> float:
        return min(self.max_backoff_seconds, self.backoff_seconds * 2 ** (attempts - 1))

    def _push(self, job: PushJob) -> None:
        if not self._repo_ready:
            url = self._api.create_repo(self.repo_id, private=self.private, exist_ok=True)
            self.repo_id, self._repo_ready = url.repo_id, True
        branches = [job.branch] + (["main"] if job.also_main and job.branch != "main" else [])
        for branch in branches:
            if branch != "main":
                self._api.create_branch(self.repo_id, branch=branch, exist_ok=True)
            self._api.upload_folder(
                repo_id=self.repo_id,
                folder_path=job.snapshot_dir,
                revision=branch,
                commit_message=f"Snapshot {job.snapshot_dir.name}",
                delete_patterns="*",
                ignore_patterns=PUSH_RECORD_NAME,
            )
            self._record_push(job.snapshot_dir, branch)

    def _record_push(self, snapshot_dir: Path, branch: str) -> None:
        revisions = sorted(pushed_revisions(snapshot_dir) | {f"{self.repo_id}@{branch}"})
        partial = snapshot_dir / f"{PUSH_RECORD_NAME}.partial"
        partial.write_text(json.dumps({"pushed": revisions}, indent=2) + "\n")
        os.replace(partial, snapshot_dir / PUSH_RECORD_NAME)

    def _log_report(self, report: PushReport) -> None:
        for job in report.pushed:
            logger.info(f"Snapshot {job.snapshot_dir.name} is on {report.repo_id}@{job.branch}.")
        if report.all_pushed:
            return
        lines = [f"{len(report.not_pushed)} snapshot(s) were not pushed to {report.repo_id}; they stay on disk:"]
        for job in report.not_pushed:
            reason = job.error or ("still uploading" if job.attempts else "not tried yet")
            lines.append(f"  {job.snapshot_dir} -> {job.branch}: {reason}")
            lines.append(f"    push it later with: {job.push_later_command(report.repo_id, self.private)}")
        lines.append("  (the push command reads the token from HF_TOKEN or `hf auth login`, or takes --hub_token)")
        logger.error("\n".join(lines))
