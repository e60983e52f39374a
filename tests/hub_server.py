"""A Hub-compatible HTTP server for the tests, and the pytest fixtures that start it.

It implements the routes that huggingface_hub 2.x really calls to create a repo, push a folder (preupload,
LFS batch + PUT, NDJSON commit), make branches and tags, list files and refs, read repo info and download
files, and it keeps what is pushed in memory. An unknown route answers 404 naming its method and path, and is
recorded in `FakeHub.unknown_routes`, so a client upgrade that calls a new route fails loudly.

Faults are injected with `FakeHub.inject_fault` (answer an error status or drop the connection for the next
matching requests), `FakeHub.down` (drop every connection) and `FakeHub.gate` (cleared: every request hangs).

Tests use the real client against it: `HfApi(endpoint=hub.url)` in the test process, or the environment
from `hub_env` (`HF_ENDPOINT`, `HF_HUB_DISABLE_XET=1`, a private `HF_HOME`) in subprocesses. `make_snapshot`
saves a tiny snapshot-like folder to push.
"""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import itertools
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, quote, unquote, urlsplit

import pytest
import torch
import yaml
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
from transformers import BertForMaskedLM, PreTrainedModel, PreTrainedTokenizerFast

from trainer_callbacks.snapshots import RUN_ARGUMENTS_FILE


HUB_USER = "fake-user"
HUB_TOKEN = "hf_fakeHubTokenThatMustNeverBeWritten0123456789"
DEFAULT_GITATTRIBUTES = "".join(
    f"{pattern} filter=lfs diff=lfs merge=lfs -text\n"
    for pattern in ("*.safetensors", "*.bin", "*.pt", "*.pth", "*.ckpt", "*.h5", "*.msgpack", "*.onnx", "*.npz")
)
# The real Hub stores any file above 10 MB in LFS, whatever its name.
LFS_SIZE_THRESHOLD = 10 * 1024 * 1024
_DATE = "2026-01-01T00:00:00.000Z"


def git_blob_oid(data: bytes) -> str:
    """The git object id of a blob: what the Hub reports as a regular file's `oid`."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    """The git-lfs pointer file committed in place of an LFS file."""
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


@dataclass
class StoredFile:
    """One file of a commit: its bytes and whether git stores it through LFS."""

    data: bytes
    lfs: bool

    @property
    def sha256(self) -> str:
        """The sha256 of the content (the LFS oid)."""
        return hashlib.sha256(self.data).hexdigest()

    @property
    def oid(self) -> str:
        """The git oid the Hub reports: of the pointer file for LFS files, of the content otherwise."""
        return git_blob_oid(lfs_pointer(self.sha256, len(self.data)) if self.lfs else self.data)

    @property
    def etag(self) -> str:
        """The ETag of a download: the sha256 for LFS files, the git oid otherwise."""
        return self.sha256 if self.lfs else self.oid

    def tree_entry(self, path: str) -> dict:
        """The JSON the tree and paths-info routes give for this file."""
        entry = {"type": "file", "oid": self.oid, "size": len(self.data), "path": path}
        if self.lfs:
            pointer = lfs_pointer(self.sha256, len(self.data))
            entry["lfs"] = {"oid": self.sha256, "size": len(self.data), "pointerSize": len(pointer)}
        return entry


@dataclass
class Commit:
    """A commit: its id, parent, message and the full file map it leaves."""

    oid: str
    parent: str | None
    title: str
    message: str
    files: dict[str, StoredFile]


@dataclass
class FakeRepo:
    """One repository: commits, branches, tags and the LFS objects uploaded to it."""

    repo_id: str
    repo_type: str
    private: bool
    commits: dict[str, Commit] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    lfs_objects: dict[str, bytes] = field(default_factory=dict)

    def resolve(self, revision: str) -> Commit | None:
        """The commit a branch, tag or commit id names, or None."""
        oid = self.branches.get(revision) or self.tags.get(revision) or revision
        return self.commits.get(oid)

    def files(self, revision: str = "main") -> dict[str, bytes]:
        """The content of every file at `revision`."""
        commit = self.resolve(revision)
        if commit is None:
            raise KeyError(f"{self.repo_id} has no revision {revision!r}")
        return {path: stored.data for path, stored in commit.files.items()}

    def history(self, revision: str = "main") -> list[Commit]:
        """The commits reachable from `revision`, newest first."""
        commits, commit = [], self.resolve(revision)
        while commit is not None:
            commits.append(commit)
            commit = self.commits.get(commit.parent) if commit.parent else None
        return commits

    def lfs_patterns(self, revision: str) -> list[str]:
        """The `filter=lfs` patterns of the `.gitattributes` at `revision`."""
        commit = self.resolve(revision)
        attributes = commit.files.get(".gitattributes") if commit else None
        text = attributes.data.decode() if attributes else DEFAULT_GITATTRIBUTES
        return [line.split()[0] for line in text.splitlines() if "filter=lfs" in line]


@dataclass
class Fault:
    """The next `times` requests of route `kind` ("any" for all) fail: `status` answered, or dropped if None."""

    kind: str
    times: int
    status: int | None


class HubError(Exception):
    """An error answer: status, message and the `X-Error-Code` the client maps to its exception types."""

    def __init__(self, status: int, message: str, error_code: str | None = None, extra: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.error_code, self.extra = status, message, error_code, extra or {}


class FakeHub:
    """In-memory state of the fake Hub: repositories, fault knobs and a log of every request."""

    def __init__(self, token: str = HUB_TOKEN, user: str = HUB_USER):
        self.token, self.user = token, user
        self.url = ""
        self.repos: dict[tuple[str, str], FakeRepo] = {}
        self.requests: list[tuple[str, str, int]] = []
        self.unknown_routes: list[str] = []
        self.down = False
        # Cleared, every request waits at the door until it is set again: a Hub that hangs.
        self.gate = threading.Event()
        self.gate.set()
        self.arrived = 0
        self._faults: list[Fault] = []
        self._lock = threading.RLock()
        self._counter = itertools.count()

    # ---- test-facing API -------------------------------------------------------------------------------
    def repo(self, repo_id: str, repo_type: str = "model") -> FakeRepo:
        """The stored repository `repo_id` (KeyError if it was never created)."""
        return self.repos[(repo_type, repo_id)]

    def inject_fault(self, kind: str, times: int = 1, status: int | None = 500) -> None:
        """Make the next `times` requests of route `kind` fail with `status`, or drop the connection if None.

        Kinds: create, whoami, agent_harnesses, validate_yaml, preupload, lfs_batch, lfs_upload, commit, branch,
        tag, refs, tree, paths_info, commits, info, resolve, or "any".
        """
        with self._lock:
            self._faults.append(Fault(kind, times, status))

    def requests_of(self, fragment: str) -> list[tuple[str, str, int]]:
        """The logged (method, path, status) of the requests whose path contains `fragment`; status 0: dropped."""
        return [request for request in self.requests if fragment in request[1]]

    # ---- internals used by the handler --------------------------------------------------------------
    def take_fault(self, kind: str) -> Fault | None:
        """Consume and return the first fault that applies to a request of route `kind`."""
        with self._lock:
            for fault in self._faults:
                if fault.times > 0 and fault.kind in (kind, "any"):
                    fault.times -= 1
                    return fault
        return None

    def new_commit(self, repo: FakeRepo, parent: Commit | None, title: str, message: str, files) -> Commit:
        """Store a commit on `repo` and return it."""
        seed = f"{repo.repo_id}\0{parent.oid if parent else ''}\0{title}\0{next(self._counter)}"
        commit = Commit(hashlib.sha1(seed.encode()).hexdigest(), parent.oid if parent else None, title, message, files)
        repo.commits[commit.oid] = commit
        return commit

    def create_repo(self, repo_id: str, repo_type: str, private: bool) -> FakeRepo:
        """Create a repository with the initial `.gitattributes` commit on `main`, as the Hub does."""
        repo = FakeRepo(repo_id, repo_type, private)
        initial = self.new_commit(
            repo, None, "initial commit", "", {".gitattributes": StoredFile(DEFAULT_GITATTRIBUTES.encode(), False)}
        )
        repo.branches["main"] = initial.oid
        self.repos[(repo_type, repo_id)] = repo
        return repo

    def repo_url(self, repo: FakeRepo) -> str:
        """The web URL of a repository, as `create_repo` returns it."""
        prefix = "" if repo.repo_type == "model" else f"{repo.repo_type}s/"
        return f"{self.url}/{prefix}{repo.repo_id}"


_REPO = r"(?P<repo>[^/]+/[^/]+)"
_API = r"^/api/(?P<type>models|datasets|spaces)/" + _REPO
_PREFIXED = r"^/(?:(?P<prefix>datasets|spaces)/)?" + _REPO


class _Handler(BaseHTTPRequestHandler):
    """Dispatches each request to the route that matches its method and path."""

    protocol_version = "HTTP/1.1"
    hub: FakeHub  # set on the subclass made for each server

    # (method, path regex, route kind, handler method name)
    ROUTES = [
        ("GET", r"^/api/whoami-v2$", "whoami", "whoami"),
        ("GET", r"^/api/agent-harnesses$", "agent_harnesses", "agent_harnesses"),
        ("POST", r"^/api/repos/create$", "create", "create_repo"),
        ("POST", r"^/api/validate-yaml$", "validate_yaml", "validate_yaml"),
        ("POST", _API + r"/preupload/(?P<rev>[^/]+)$", "preupload", "preupload"),
        ("POST", _API + r"/commit/(?P<rev>[^/]+)$", "commit", "commit"),
        ("POST", _API + r"/branch/(?P<name>[^/]+)$", "branch", "create_branch"),
        ("POST", _API + r"/tag/(?P<rev>[^/]+)$", "tag", "create_tag"),
        ("GET", _API + r"/refs$", "refs", "refs"),
        ("GET", _API + r"/tree/(?P<rev>[^/]+)(?:/(?P<path>.+))?$", "tree", "tree"),
        ("POST", _API + r"/paths-info/(?P<rev>[^/]+)$", "paths_info", "paths_info"),
        ("GET", _API + r"/commits/(?P<rev>[^/]+)$", "commits", "commits"),
        ("GET", _API + r"(?:/revision/(?P<rev>[^/]+))?$", "info", "repo_info"),
        ("POST", _PREFIXED + r"\.git/info/lfs/objects/batch$", "lfs_batch", "lfs_batch"),
        ("PUT", r"^/__lfs__/(?P<type>models|datasets|spaces)/" + _REPO + r"/(?P<oid>[0-9a-f]{64})$",
         "lfs_upload", "lfs_upload"),
        ("HEAD", _PREFIXED + r"/resolve/(?P<rev>[^/]+)/(?P<path>.+)$", "resolve", "resolve"),
        ("GET", _PREFIXED + r"/resolve/(?P<rev>[^/]+)/(?P<path>.+)$", "resolve", "resolve"),
    ]

    def log_message(self, format, *args):  # noqa: A002 - the base class's signature
        """Stay quiet: the hub keeps its own request log."""

    def do_GET(self):  # noqa: N802 - http.server's naming
        """Serve a GET."""
        self._dispatch("GET")

    def do_HEAD(self):  # noqa: N802
        """Serve a HEAD."""
        self._dispatch("HEAD")

    def do_POST(self):  # noqa: N802
        """Serve a POST."""
        self._dispatch("POST")

    def do_PUT(self):  # noqa: N802
        """Serve a PUT."""
        self._dispatch("PUT")

    def do_DELETE(self):  # noqa: N802
        """Answer a DELETE: no route of ours takes one, so it is an unknown route."""
        self._dispatch("DELETE")

    # ---- plumbing -----------------------------------------------------------------------------------------
    def _dispatch(self, method: str) -> None:
        split = urlsplit(self.path)
        self.query = {key: values[-1] for key, values in parse_qs(split.query).items()}
        body = self._read_body()
        with self.hub._lock:
            self.hub.arrived += 1
        self.hub.gate.wait()
        route = next(
            ((kind, name, match) for verb, pattern, kind, name in self.ROUTES
             if verb == method and (match := re.match(pattern, split.path))),
            None,
        )
        kind = route[0] if route else "unknown"
        fault = None if self.hub.down else self.hub.take_fault(kind)
        if self.hub.down or (fault is not None and fault.status is None):
            self.hub.requests.append((method, split.path, 0))
            self.close_connection = True  # answer nothing: the client sees the connection drop
            return
        try:
            if fault is not None:
                raise HubError(fault.status, f"fake Hub: injected fault on {kind}")
            if route is None:
                self.hub.unknown_routes.append(f"{method} {split.path}")
                raise HubError(404, f"fake Hub: no route for {method} {split.path}")
            params = {key: unquote(value) if value else value for key, value in route[2].groupdict().items()}
            status, headers, payload = getattr(self, route[1])(body=body, **params)
        except HubError as error:
            status = error.status
            headers = {"X-Error-Message": error.message}
            if error.error_code:
                headers["X-Error-Code"] = error.error_code
            headers.update(error.extra.pop("headers", {}))
            payload = {"error": error.message, **error.extra}
        self.hub.requests.append((method, split.path, status))
        self._respond(method, status, headers, payload)

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            while self.rfile.readline() not in (b"\r\n", b"\n", b""):  # trailers
                pass
            return b"".join(chunks)
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _respond(self, method: str, status: int, headers: dict, payload) -> None:
        if isinstance(payload, bytes):
            data, content_type = payload, "application/octet-stream"
        else:
            data, content_type = json.dumps(payload).encode(), "application/json"
        self.send_response(status)
        headers = {"Content-Type": content_type, "Content-Length": str(len(data)), **headers}
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        if method != "HEAD":
            self.wfile.write(data)

    def _json(self, body: bytes) -> dict:
        try:
            return json.loads(body or b"{}")
        except json.JSONDecodeError as error:
            raise HubError(400, f"fake Hub: body is not JSON: {error}") from error

    def _authorized(self) -> bool:
        return self.headers.get("Authorization") == f"Bearer {self.hub.token}"

    def _require_token(self) -> None:
        if not self._authorized():
            message = "Invalid credentials in Authorization header"
            raise HubError(401, message, extra={"headers": {"X-Error-Message": message}})

    def _repo(self, type_: str | None, repo: str, *, write: bool = False) -> FakeRepo:
        if write:
            self._require_token()
        repo_type = (type_ or "models").rstrip("s")
        stored = self.hub.repos.get((repo_type, repo))
        if stored is None or (stored.private and not self._authorized()):
            raise HubError(404, "Repository not found", "RepoNotFound")
        return stored

    def _commit(self, repo: FakeRepo, rev: str) -> Commit:
        commit = repo.resolve(rev)
        if commit is None:
            raise HubError(404, f"Invalid rev id: {rev}", "RevisionNotFound")
        return commit

    # ---- routes -------------------------------------------------------------------------------------------
    def whoami(self, body):
        self._require_token()
        user = {"type": "user", "id": "0", "name": self.hub.user, "fullname": self.hub.user, "orgs": []}
        auth = {"type": "access_token", "accessToken": {"displayName": "tests", "role": "write"}}
        return 200, {}, {**user, "auth": auth}

    def agent_harnesses(self, body):
        # The client fetches this registry (once a day) to name the AI agent, if any, in its user agent.
        return 200, {}, {"standardEnvVars": [], "harnesses": {}}

    def create_repo(self, body):
        self._require_token()
        payload = self._json(body)
        repo_id = f"{payload.get('organization') or self.hub.user}/{payload['name']}"
        repo_type = payload.get("type") or "model"
        with self.hub._lock:
            existing = self.hub.repos.get((repo_type, repo_id))
            if existing is not None:
                raise HubError(409, "You already created this repo", extra={"url": self.hub.repo_url(existing)})
            repo = self.hub.create_repo(repo_id, repo_type, payload.get("visibility") == "private")
        return 200, {}, {"url": self.hub.repo_url(repo), "name": repo_id, "id": repo_id}

    def validate_yaml(self, body):
        content = self._json(body).get("content", "")
        match = re.match(r"^---\s*\n(.*?)\n---\s*(\n|$)", content, re.DOTALL)
        errors = []
        if match:
            try:
                metadata = yaml.safe_load(match.group(1))
                if metadata is not None and not isinstance(metadata, dict):
                    errors.append({"message": "metadata must be a YAML mapping"})
            except yaml.YAMLError as error:
                errors.append({"message": f"invalid YAML: {error}"})
        if errors:
            return 400, {}, {"errors": errors, "warnings": []}
        return 200, {}, {"errors": [], "warnings": []}

    def preupload(self, body, type, repo, rev):  # noqa: A002
        stored = self._repo(type, repo, write=True)
        commit = self._commit(stored, rev)
        patterns = stored.lfs_patterns(rev)
        files = []
        for entry in self._json(body)["files"]:
            sample = base64.b64decode(entry["sample"])
            lfs = (
                entry["size"] >= LFS_SIZE_THRESHOLD
                or b"\0" in sample
                or any(fnmatch.fnmatch(entry["path"].rsplit("/", 1)[-1], pattern) for pattern in patterns)
            )
            existing = commit.files.get(entry["path"])
            oid = None if existing is None else (existing.sha256 if existing.lfs else existing.oid)
            files.append({"path": entry["path"], "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False,
                          "oid": oid})
        return 200, {}, {"files": files, "commitOid": commit.oid}

    def lfs_batch(self, body, prefix, repo):
        stored = self._repo(prefix, repo, write=True)
        payload = self._json(body)
        if payload.get("operation") != "upload":
            raise HubError(400, "fake Hub: only the LFS upload operation is implemented")
        objects = []
        for obj in payload["objects"]:
            answer = {"oid": obj["oid"], "size": obj["size"], "authenticated": True}
            if obj["oid"] not in stored.lfs_objects:
                href = f"{self.hub.url}/__lfs__/{stored.repo_type}s/{quote(stored.repo_id)}/{obj['oid']}"
                answer["actions"] = {"upload": {"href": href, "header": {}}}
            objects.append(answer)
        return 200, {"Content-Type": "application/vnd.git-lfs+json"}, {"transfer": "basic", "objects": objects}

    def lfs_upload(self, body, type, repo, oid):  # noqa: A002
        stored = self.hub.repos.get((type.rstrip("s"), repo))
        if stored is None:
            raise HubError(404, "Repository not found", "RepoNotFound")
        if hashlib.sha256(body).hexdigest() != oid:
            raise HubError(400, f"fake Hub: uploaded bytes do not match sha256 {oid}")
        stored.lfs_objects[oid] = body
        return 200, {"ETag": f'"{oid}"'}, {}

    def commit(self, body, type, repo, rev):  # noqa: A002
        stored = self._repo(type, repo, write=True)
        if self.query.get("create_pr"):
            raise HubError(400, "fake Hub: pull requests are not implemented")
        if rev not in stored.branches:
            raise HubError(404, f"Invalid rev id: {rev} is not a branch", "RevisionNotFound")
        lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
        if not lines or lines[0].get("key") != "header":
            raise HubError(400, "fake Hub: the first NDJSON line must be the header")
        header = lines[0]["value"]
        with self.hub._lock:
            parent = stored.commits[stored.branches[rev]]
            if header.get("parentCommit") not in (None, parent.oid):
                raise HubError(412, f"fake Hub: {rev} is at {parent.oid}, not {header['parentCommit']}")
            files = dict(parent.files)
            for line in lines[1:]:
                key, value = line["key"], line["value"]
                if key == "file":
                    files[value["path"]] = StoredFile(base64.b64decode(value["content"]), False)
                elif key == "lfsFile":
                    if value["oid"] not in stored.lfs_objects:
                        raise HubError(422, f"fake Hub: LFS object {value['oid']} of {value['path']} was not uploaded")
                    files[value["path"]] = StoredFile(stored.lfs_objects[value["oid"]], True)
                elif key == "deletedFile":
                    if files.pop(value["path"], None) is None:
                        raise HubError(404, f"A file with this name doesn't exist: {value['path']}", "EntryNotFound")
                elif key == "deletedFolder":
                    folder = value["path"].rstrip("/") + "/"
                    files = {path: data for path, data in files.items() if not path.startswith(folder)}
                else:
                    raise HubError(400, f"fake Hub: unknown commit operation {key!r}")
            commit = self.hub.new_commit(stored, parent, header["summary"], header.get("description", ""), files)
            stored.branches[rev] = commit.oid
        url = f"{self.hub.repo_url(stored)}/commit/{commit.oid}"
        return 200, {}, {"success": True, "commitOid": commit.oid, "commitUrl": url, "hookOutput": ""}

    def create_branch(self, body, type, repo, name):  # noqa: A002
        stored = self._repo(type, repo, write=True)
        start = self._json(body).get("startingPoint") or "main"
        with self.hub._lock:
            if name in stored.branches:
                raise HubError(409, f"Reference refs/heads/{name} already exists")
            stored.branches[name] = self._commit(stored, start).oid
        return 200, {}, {}

    def create_tag(self, body, type, repo, rev):  # noqa: A002
        stored = self._repo(type, repo, write=True)
        tag = self._json(body)["tag"]
        with self.hub._lock:
            if tag in stored.tags:
                raise HubError(409, f"Tag {tag} already exists")
            stored.tags[tag] = self._commit(stored, rev).oid
        return 200, {}, {}

    def refs(self, body, type, repo):  # noqa: A002
        stored = self._repo(type, repo)

        def refs_of(table, prefix):
            return [{"name": name, "ref": f"refs/{prefix}/{name}", "targetCommit": oid} for name, oid in table.items()]

        payload = {"branches": refs_of(stored.branches, "heads"), "converts": [], "tags": refs_of(stored.tags, "tags")}
        if self.query.get("include_prs"):
            payload["pullRequests"] = []
        return 200, {}, payload

    def tree(self, body, type, repo, rev, path):  # noqa: A002
        stored = self._repo(type, repo)
        commit = self._commit(stored, rev)
        prefix = f"{path.strip('/')}/" if path else ""
        recursive = self.query.get("recursive", "false").lower() == "true"
        entries, folders = [], set()
        for file_path, stored_file in sorted(commit.files.items()):
            if not file_path.startswith(prefix):
                continue
            parts = file_path[len(prefix):].split("/")
            for depth in range(1, len(parts)):
                folder = prefix + "/".join(parts[:depth])
                if folder not in folders and (recursive or depth == 1):
                    folders.add(folder)
                    oid = git_blob_oid(folder.encode())
                    entries.append({"type": "directory", "oid": oid, "size": 0, "path": folder})
            if recursive or len(parts) == 1:
                entries.append(stored_file.tree_entry(file_path))
        if prefix and not entries:
            raise HubError(404, f"{path} does not exist at {rev}", "EntryNotFound")
        return 200, {}, entries

    def paths_info(self, body, type, repo, rev):  # noqa: A002
        stored = self._repo(type, repo)
        commit = self._commit(stored, rev)
        form = parse_qs(body.decode())
        return 200, {}, [commit.files[p].tree_entry(p) for p in form.get("paths", []) if p in commit.files]

    def commits(self, body, type, repo, rev):  # noqa: A002
        stored = self._repo(type, repo)
        self._commit(stored, rev)
        payload = [
            {"id": c.oid, "title": c.title, "message": c.message, "authors": [{"user": self.hub.user}], "date": _DATE}
            for c in stored.history(rev)
        ]
        return 200, {}, payload

    def repo_info(self, body, type, repo, rev=None):  # noqa: A002
        stored = self._repo(type, repo)
        commit = self._commit(stored, rev or "main")
        card = commit.files.get("README.md")
        match = re.match(r"^---\s*\n(.*?)\n---", card.data.decode(), re.DOTALL) if card else None
        payload = {
            "id": stored.repo_id, "author": stored.repo_id.split("/")[0], "sha": commit.oid, "private": stored.private,
            "gated": False, "disabled": False, "downloads": 0, "likes": 0, "tags": [], "createdAt": _DATE,
            "lastModified": _DATE, "siblings": [{"rfilename": path} for path in sorted(commit.files)],
        }
        if match:
            payload["cardData"] = yaml.safe_load(match.group(1)) or {}
        return 200, {}, payload

    def resolve(self, body, prefix, repo, rev, path):
        stored = self._repo(prefix, repo)
        commit = self._commit(stored, rev)
        stored_file = commit.files.get(path)
        if stored_file is None:
            raise HubError(404, "Entry not found", "EntryNotFound", extra={"headers": {"X-Repo-Commit": commit.oid}})
        headers = {"X-Repo-Commit": commit.oid, "ETag": f'"{stored_file.etag}"', "Accept-Ranges": "bytes"}
        if stored_file.lfs:
            headers.update({"X-Linked-Etag": f'"{stored_file.etag}"', "X-Linked-Size": str(len(stored_file.data))})
        data = stored_file.data
        byte_range = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
        if byte_range:
            start = int(byte_range.group(1))
            end = int(byte_range.group(2)) if byte_range.group(2) else len(data) - 1
            headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
            return 206, headers, data[start:end + 1]
        return 200, headers, data


class HubServer:
    """Runs a `FakeHub` on 127.0.0.1 on a free port, in a daemon thread."""

    def __init__(self, hub: FakeHub | None = None):
        self.hub = hub or FakeHub()
        handler = type("FakeHubHandler", (_Handler,), {"hub": self.hub})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self.hub.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-hub", daemon=True
        )

    def __enter__(self) -> FakeHub:
        self._thread.start()
        return self.hub

    def __exit__(self, *exc) -> None:
        self.hub.gate.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


@pytest.fixture
def hub_server():
    """A running fake Hub; yields the `FakeHub` (its `url`, `token`, stored `repos`, fault knobs)."""
    with HubServer() as hub:
        yield hub


@pytest.fixture
def hub_env(hub_server, monkeypatch, tmp_path):
    """Point huggingface_hub, in this process and in subprocesses, at the fake Hub; yields the `FakeHub`.

    Subprocesses get `HF_ENDPOINT`, `HF_HUB_DISABLE_XET=1`, a private `HF_HOME` and no offline flag through the
    environment; in this process the already-imported `huggingface_hub.constants` are patched to match.
    """
    import huggingface_hub.constants as constants

    environment = {
        "HF_ENDPOINT": hub_server.url,
        "HF_HUB_DISABLE_XET": "1",
        "HF_HOME": str(tmp_path / "hf_home"),
        "HF_HUB_DISABLE_TELEMETRY": "1",
    }
    for key, value in environment.items():
        monkeypatch.setenv(key, value)
    # Offline mode blocks localhost too; a stored or inherited token must not stand in for the test's own.
    for key in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setattr(constants, "ENDPOINT", hub_server.url)
    template = hub_server.url + "/{repo_id}/resolve/{revision}/{filename}"
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", template)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HOME", environment["HF_HOME"])
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf_home" / "hub"))
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "hf_home" / "token"))
    monkeypatch.setattr(constants, "AGENT_HARNESSES_PATH", str(tmp_path / "hf_home" / ".agent_harnesses.json"))
    yield hub_server


# ---- snapshot-like folders ---------------------------------------------------------------------------------
def make_snapshot(
    folder: str | Path, model_class: type[PreTrainedModel] = BertForMaskedLM, seed: int = 0
) -> Path:
    """Save a tiny masked-LM snapshot folder like the finetune snapshots (safetensors weights, config, a fast
    WordPiece tokenizer trained here, run arguments) and return its path."""
    folder = Path(folder)
    wordpiece = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    wordpiece.normalizer = normalizers.BertNormalizer(lowercase=True)
    wordpiece.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    corpus = ["the budget clock ticks while the model learns", "snapshots go to the hub on branches of their own"]
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    wordpiece.train_from_iterator(corpus, trainers.WordPieceTrainer(vocab_size=120, special_tokens=special))
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=wordpiece, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]",
        mask_token="[MASK]",
    )
    torch.manual_seed(seed)
    config = model_class.config_class(
        vocab_size=len(tokenizer), hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
        max_position_embeddings=64,
    )
    model_class(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    arguments = {"TrainingArguments": {"output_dir": str(folder.parent.parent)}}
    (folder / RUN_ARGUMENTS_FILE).write_text(json.dumps(arguments))
    return folder
