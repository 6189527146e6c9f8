"""A stand-in for the Hugging Face Hub HTTP API, in memory, that the real ``huggingface_hub`` client talks to.

It serves, on 127.0.0.1 at a free port from a daemon thread, the endpoints that ``create_repo``,
``create_commit`` / ``upload_file`` / ``upload_folder``, ``datasets.DatasetDict.push_to_hub``,
``RepoCard.push_to_hub``, ``HfFileSystem`` listings and ``hf_hub_download`` call, for model, dataset and
space repos:

- ``GET  /api/whoami-v2``
- ``POST /api/repos/create``, ``DELETE /api/repos/delete``
- ``POST /api/validate-yaml``
- ``GET  /api/{type}s/{repo_id}`` and ``.../revision/{rev}`` (repo info)
- ``POST /api/{type}s/{repo_id}/preupload/{rev}`` (regular or LFS upload mode per file)
- ``POST /{prefix}{repo_id}.git/info/lfs/objects/batch`` and ``PUT /lfs-objects/{oid}`` (basic LFS transfer)
- ``POST /api/{type}s/{repo_id}/commit/{rev}`` (NDJSON: header, file, lfsFile, deletedFile, deletedFolder)
- ``POST /api/{type}s/{repo_id}/paths-info/{rev}``, ``GET /api/{type}s/{repo_id}/tree/{rev}[/{path}]``
- ``POST``/``DELETE /api/{type}s/{repo_id}/branch/{branch}``
- ``GET``/``HEAD /{prefix}{repo_id}/resolve/{rev}/{path}`` (with ``Range``)
- ``GET /api/agent-harnesses`` (an empty registry)

Uploads go through the legacy LFS protocol, not Xet: the client needs ``HF_HUB_DISABLE_XET=1`` (the Xet
token endpoints answer 501 saying so). ``HubStandIn.client_env`` gives the environment for a subprocess.
Everything lives in memory: ``repos`` (each with its commits, branches, files and private flag),
``lfs_objects`` and ``requests`` (every request received, with its headers, for assertions). Tokens in
``rejected_tokens`` get the Hub's 401 "Invalid credentials in Authorization header" on any endpoint;
while ``commit_error`` is set, every commit is answered with it (to test how a client copes).

>>> with HubStandIn() as hub:
...     subprocess.run([...], env=hub.client_env("hf_dummy", home=tmp_path / "hf"))
...     hub.repo("user/name", "dataset").files["README.md"]
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

from support.loopback_server import LoopbackServer

PREFIXES = {"model": "", "dataset": "datasets/", "space": "spaces/"}
TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}
INVALID_TOKEN = "Invalid credentials in Authorization header"
# Files the Hub stores with LFS: these suffixes (as in its default .gitattributes), binary content, or large.
LFS_SUFFIXES = (
    ".arrow", ".bin", ".bz2", ".ckpt", ".gz", ".h5", ".joblib", ".msgpack", ".npy", ".npz", ".onnx",
    ".parquet", ".pb", ".pickle", ".pkl", ".pt", ".pth", ".safetensors", ".tar", ".tflite", ".zip", ".zst",
)  # fmt: skip
LFS_MIN_SIZE = 10 * 1024 * 1024
GITATTRIBUTES = "".join(f"*{suffix} filter=lfs diff=lfs merge=lfs -text\n" for suffix in LFS_SUFFIXES)

_REPO = r"/api/(?P<type>models|datasets|spaces)/(?P<repo>[^/]+/[^/]+)"
_PREFIXED = r"/(?:(?P<prefix>datasets|spaces)/)?(?P<repo>[^/]+/[^/]+)"


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def git_blob_id(data: bytes) -> str:
    """The git object id of a blob (what ``git hash-object`` prints)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(data: bytes) -> bytes:
    """The git LFS pointer file that stands for ``data`` in git."""
    oid = hashlib.sha256(data).hexdigest()
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{oid}\nsize {len(data)}\n".encode()


class HubError(Exception):
    """An HTTP error answer: status, message (JSON ``error`` and ``X-Error-Message``), ``X-Error-Code``."""

    def __init__(self, status: int, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.code = status, message, code


@dataclass
class HubRequest:
    """One request as received. ``headers`` has lower-case names; neither it nor the body is in the repr."""

    method: str
    path: str  # as sent, still percent-encoded, without the query
    query: dict[str, list[str]]
    headers: dict[str, str] = field(repr=False)
    body: bytes = field(repr=False)

    @property
    def authorization(self) -> str | None:
        return self.headers.get("authorization")

    @property
    def token(self) -> str | None:
        """The bearer token, if any."""
        auth = self.authorization or ""
        return (auth[len("Bearer ") :].strip() or None) if auth.startswith("Bearer ") else None


@dataclass
class Commit:
    oid: str
    title: str
    description: str
    parent: str | None
    files: dict[str, bytes]  # every file of the repo after this commit
    lfs: frozenset[str]  # which of them are stored with LFS
    date: str


@dataclass
class Repo:
    repo_type: str
    repo_id: str
    private: bool
    created_at: str = field(default_factory=_now)
    commits: list[Commit] = field(default_factory=list)  # every commit, oldest first
    branches: dict[str, str] = field(default_factory=dict)  # branch -> commit oid

    @property
    def url_path(self) -> str:
        return PREFIXES[self.repo_type] + self.repo_id

    def commit(self, revision: str = "main") -> Commit | None:
        """The commit a branch name or (abbreviated, 7+ hex digits) commit id names, or None."""
        oid = self.branches.get(revision)
        if oid is None and re.fullmatch(r"[0-9a-f]{7,40}", revision):
            oid = next((c.oid for c in self.commits if c.oid.startswith(revision)), None)
        return next((c for c in self.commits if c.oid == oid), None)

    @property
    def head(self) -> Commit:
        commit = self.commit("main")
        assert commit is not None
        return commit

    @property
    def files(self) -> dict[str, bytes]:
        """The files on ``main``."""
        return self.head.files

    def history(self, revision: str = "main") -> list[Commit]:
        """Commits reachable from ``revision``, newest first."""
        by_oid = {c.oid: c for c in self.commits}
        found, commit = [], self.commit(revision)
        while commit is not None:
            found.append(commit)
            commit = by_oid.get(commit.parent) if commit.parent else None
        return found


Answer = tuple[int, dict[str, str], bytes]  # status, headers, body
Route = tuple[str, re.Pattern[str], Callable[..., Answer]]


class HubStandIn(LoopbackServer):
    """The API on ``url`` (127.0.0.1, a free port) from a daemon thread; state in ``repos`` and ``requests``.

    ``user`` is who every accepted token belongs to; ``rejected_tokens`` get a 401 on every request.
    """

    def __init__(self, user: str = "tester", rejected_tokens: Iterable[str] = ()) -> None:
        self.user = user
        self.rejected_tokens = set(rejected_tokens)
        self.commit_error: HubError | None = None
        self.repos: dict[tuple[str, str], Repo] = {}  # (repo_type, repo_id) -> repo
        self.lfs_objects: dict[str, bytes] = {}  # sha256 hex -> content
        self.requests: list[HubRequest] = []
        self._lock = threading.RLock()
        self._counter = 0
        super().__init__(_handler(self))
        self._routes: list[Route] = [
            ("GET", re.compile(r"/api/whoami-v2"), self._whoami),
            ("GET", re.compile(r"/api/agent-harnesses"), self._agent_harnesses),
            ("POST", re.compile(r"/api/validate-yaml"), self._validate_yaml),
            ("POST", re.compile(r"/api/repos/create"), self._create_repo),
            ("DELETE", re.compile(r"/api/repos/delete"), self._delete_repo),
            ("GET", re.compile(_REPO + r"(?:/revision/(?P<rev>[^/]+))?"), self._repo_info),
            ("POST", re.compile(_REPO + r"/preupload/(?P<rev>[^/]+)"), self._preupload),
            ("POST", re.compile(_REPO + r"/commit/(?P<rev>[^/]+)"), self._commit),
            ("POST", re.compile(_REPO + r"/paths-info/(?P<rev>[^/]+)"), self._paths_info),
            ("GET", re.compile(_REPO + r"/tree/(?P<rev>[^/]+)(?:/(?P<path>.*))?"), self._tree),
            ("POST", re.compile(_REPO + r"/branch/(?P<branch>[^/]+)"), self._create_branch),
            ("DELETE", re.compile(_REPO + r"/branch/(?P<branch>[^/]+)"), self._delete_branch),
            ("GET", re.compile(_REPO + r"/xet-(?:read|write)-token/.*"), self._xet),
            ("POST", re.compile(_PREFIXED + r"\.git/info/lfs/objects/batch"), self._lfs_batch),
            ("PUT", re.compile(r"/lfs-objects/(?P<oid>[0-9a-f]{64})"), self._lfs_put),
            ("GET", re.compile(_PREFIXED + r"/resolve/(?P<rev>[^/]+)/(?P<path>.+)"), self._resolve),
            ("HEAD", re.compile(_PREFIXED + r"/resolve/(?P<rev>[^/]+)/(?P<path>.+)"), self._resolve),
        ]

    # -- lifecycle ---------------------------------------------------------------------------------------

    def client_env(
        self, token: str | None, home: str | Path | None = None, base: Mapping[str, str] | None = None
    ) -> dict[str, str]:
        """Environment for a ``huggingface_hub`` client process that talks to this stand-in only.

        Starts from ``base`` (default ``os.environ``); sets ``HF_ENDPOINT``, ``HF_TOKEN`` (removed when
        None), ``HF_HUB_DISABLE_XET=1``, no telemetry, progress bars or update checks, and ``HF_HOME`` (a
        fresh directory keeps a stored token and caches out) when ``home`` is given; unsets offline modes.
        """
        env = dict(os.environ if base is None else base)
        for name in (
            "HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE", "HUGGINGFACE_CO_STAGING",
            "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_TOKEN_PATH", "HF_HUB_ENABLE_HF_TRANSFER",
        ):  # fmt: skip
            env.pop(name, None)
        env.update(
            HF_ENDPOINT=self.url,
            HF_HUB_DISABLE_XET="1",
            HF_HUB_DISABLE_TELEMETRY="1",
            HF_HUB_DISABLE_PROGRESS_BARS="1",
            HF_HUB_DISABLE_UPDATE_CHECK="1",
            HF_HUB_DISABLE_IMPLICIT_TOKEN="0",
            NO_PROXY=",".join(filter(None, [env.get("NO_PROXY"), "127.0.0.1", "localhost"])),
        )
        if token is not None:
            env["HF_TOKEN"] = token
        if home is not None:
            env["HF_HOME"] = str(home)
        return env

    # -- inspection --------------------------------------------------------------------------------------

    def repo(self, repo_id: str, repo_type: str = "model") -> Repo:
        """The repo (KeyError if it was never created)."""
        return self.repos[(repo_type, repo_id)]

    # -- request handling ----------------------------------------------------------------------------------

    def handle(self, request: HubRequest) -> Answer:
        """``(status, headers, body)`` for one request; records it first."""
        with self._lock:
            self.requests.append(request)
            try:
                if request.token in self.rejected_tokens:
                    raise HubError(401, INVALID_TOKEN)
                for method, pattern, endpoint in self._routes:
                    match = pattern.fullmatch(request.path)
                    if match and method == request.method:
                        args = {k: unquote(v) for k, v in match.groupdict().items() if v is not None}
                        return endpoint(request, **args)
                error = HubError(404, f"stand-in: no endpoint {request.method} {request.path}")
            except HubError as exc:
                error = exc
            except (KeyError, TypeError, ValueError) as exc:  # a malformed body (bad JSON included)
                error = HubError(400, f"stand-in: malformed request ({type(exc).__name__}: {exc})")
        headers = {"X-Error-Message": error.message.encode("ascii", "replace").decode()}  # latin-1 header
        if error.code:
            headers["X-Error-Code"] = error.code
        return _json(error.status, {"error": error.message}, headers)

    def _require_token(self, request: HubRequest) -> str:
        if request.token is None:
            raise HubError(401, "Invalid username or password.")
        return request.token

    def _find(self, request: HubRequest, repo_type: str, repo_id: str, write: bool = False) -> Repo:
        """The repo, if the request may see it (a private repo needs a token, as writes do)."""
        if write:
            self._require_token(request)
        repo = self.repos.get((repo_type, repo_id))
        if repo is None or (repo.private and request.token is None):
            raise HubError(404 if repo is None else 401, "Repository not found", "RepoNotFound")
        return repo

    def _find_commit(self, repo: Repo, revision: str) -> Commit:
        commit = repo.commit(revision)
        if commit is None:
            raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return commit

    def _new_commit(
        self, repo: Repo, branch: str, title: str, description: str, files: dict, lfs: set
    ) -> Commit:
        self._counter += 1
        parent = repo.branches.get(branch)
        oid = hashlib.sha1(f"{repo.repo_id}:{self._counter}:{parent}:{title}".encode()).hexdigest()
        commit = Commit(oid, title, description, parent, dict(files), frozenset(lfs & set(files)), _now())
        repo.commits.append(commit)
        repo.branches[branch] = oid
        return commit

    # -- endpoints -------------------------------------------------------------------------------------------

    def _whoami(self, request: HubRequest) -> Answer:
        self._require_token(request)
        return _json(
            200,
            {
                "type": "user",
                "id": hashlib.sha1(self.user.encode()).hexdigest()[:24],
                "name": self.user,
                "fullname": self.user,
                "isPro": False,
                "orgs": [],
                "auth": {"type": "access_token", "accessToken": {"displayName": "stand-in", "role": "write"}},
            },
        )

    def _agent_harnesses(self, request: HubRequest) -> Answer:
        return _json(200, {"standardEnvVars": [], "harnesses": {}})

    def _validate_yaml(self, request: HubRequest) -> Answer:
        content = json.loads(request.body or b"{}").get("content", "")
        match = re.match(r"---\r?\n(.*?)\r?\n---(?:\r?\n|$)", content, re.S)
        errors = []
        if match:
            try:
                if not isinstance(yaml.safe_load(match.group(1)) or {}, dict):
                    errors.append({"message": "YAML metadata is not a mapping"})
            except yaml.YAMLError as exc:
                errors.append({"message": f"Invalid YAML metadata: {str(exc).splitlines()[0]}"})
        if errors:
            return _json(400, {"errors": errors, "warnings": [], "error": errors[0]["message"]})
        return _json(200, {"errors": [], "warnings": []})

    def _create_repo(self, request: HubRequest) -> Answer:
        self._require_token(request)
        payload = json.loads(request.body or b"{}")
        repo_type = payload.get("type") or "model"
        if repo_type not in PREFIXES or not payload.get("name"):
            raise HubError(400, f"bad repo type {repo_type!r} or name {payload.get('name')!r}")
        repo_id = f"{payload.get('organization') or self.user}/{payload['name']}"
        private = payload.get("visibility") == "private" or payload.get("private") is True
        url = f"{self.url}/{PREFIXES[repo_type]}{repo_id}"
        if (repo_type, repo_id) in self.repos:
            # Like the Hub, name the existing repo's url: create_repo(exist_ok=True) reads it.
            message = f"You already created this {repo_type} repo"
            return _json(409, {"error": message, "url": url}, {"X-Error-Message": message})
        repo = Repo(repo_type, repo_id, private)
        self.repos[(repo_type, repo_id)] = repo
        self._new_commit(
            repo, "main", "initial commit", "", {".gitattributes": GITATTRIBUTES.encode()}, set()
        )
        return _json(200, {"url": url, "name": repo_id, "id": hashlib.sha1(url.encode()).hexdigest()[:24]})

    def _delete_repo(self, request: HubRequest) -> Answer:
        payload = json.loads(request.body or b"{}")
        repo_type = payload.get("type") or "model"
        repo_id = f"{payload.get('organization') or self.user}/{payload.get('name')}"
        self._find(request, repo_type, repo_id, write=True)
        del self.repos[(repo_type, repo_id)]
        return _json(200, {})

    def _repo_info(self, request: HubRequest, type: str, repo: str, rev: str = "main") -> Answer:
        found = self._find(request, TYPES[type], repo)
        commit = self._find_commit(found, rev)
        blobs = request.query.get("blobs", ["false"])[0].lower() == "true"
        siblings = []
        for path in sorted(commit.files):
            sibling: dict[str, Any] = {"rfilename": path}
            if blobs:
                sibling.update(_file_entry(commit, path))
                del sibling["type"], sibling["path"]
                sibling["blobId"] = sibling.pop("oid")
                if "lfs" in sibling:
                    sibling["lfs"] = {"sha256": sibling["lfs"]["oid"], **sibling["lfs"]}
            siblings.append(sibling)
        info = {
            "_id": hashlib.sha1(found.url_path.encode()).hexdigest()[:24],
            "id": found.repo_id,
            "author": found.repo_id.split("/")[0],
            "sha": commit.oid,
            "private": found.private,
            "gated": False,
            "disabled": False,
            "createdAt": found.created_at,
            "lastModified": commit.date,
            "downloads": 0,
            "likes": 0,
            "tags": [],
            "siblings": siblings,
            "usedStorage": sum(len(data) for data in commit.files.values()),
        }
        if found.repo_type == "model":
            info["modelId"] = found.repo_id
        card = _card_data(commit.files.get("README.md"))
        if card is not None:
            info["cardData"] = card
        return _json(200, info)

    def _preupload(self, request: HubRequest, type: str, repo: str, rev: str) -> Answer:
        found = self._find(request, TYPES[type], repo, write=True)
        commit = self._find_commit(found, rev)
        answers = []
        for file in json.loads(request.body).get("files", []):
            sample = base64.b64decode(file.get("sample", ""))
            lfs = (
                file["path"].lower().endswith(LFS_SUFFIXES) or b"\0" in sample or file["size"] >= LFS_MIN_SIZE
            )
            existing = commit.files.get(file["path"])
            oid = None
            if existing is not None:
                in_lfs = file["path"] in commit.lfs
                oid = hashlib.sha256(existing).hexdigest() if in_lfs else git_blob_id(existing)
            answers.append(
                {
                    "path": file["path"],
                    "uploadMode": "lfs" if lfs else "regular",
                    "shouldIgnore": False,
                    "oid": oid,
                }
            )
        return _json(200, {"files": answers, "commitOid": commit.oid})

    def _lfs_batch(self, request: HubRequest, repo: str, prefix: str = "") -> Answer:
        found = self._find(request, TYPES[prefix] if prefix else "model", repo, write=True)
        payload = json.loads(request.body)
        if payload.get("operation") != "upload":
            raise HubError(400, "stand-in: only LFS uploads are supported")
        objects = []
        for obj in payload.get("objects", []):
            entry: dict[str, Any] = {"oid": obj["oid"], "size": obj["size"], "authenticated": True}
            if obj["oid"] not in self.lfs_objects:
                href = f"{self.url}/lfs-objects/{obj['oid']}?size={obj['size']}&repo={found.url_path}"
                entry["actions"] = {"upload": {"href": href, "expires_in": 3600}}
            objects.append(entry)
        body = json.dumps({"transfer": "basic", "objects": objects, "hash_algo": "sha256"}).encode()
        return 200, {"Content-Type": "application/vnd.git-lfs+json"}, body

    def _lfs_put(self, request: HubRequest, oid: str) -> Answer:
        # The presigned storage URL: like S3, it takes no Authorization header.
        if hashlib.sha256(request.body).hexdigest() != oid:
            raise HubError(400, "LFS object does not match its sha256")
        if request.query.get("size", [str(len(request.body))])[0] != str(len(request.body)):
            raise HubError(400, "LFS object does not have its announced size")
        self.lfs_objects[oid] = request.body
        return 200, {"ETag": f'"{hashlib.md5(request.body).hexdigest()}"'}, b""

    def _xet(self, request: HubRequest, type: str, repo: str) -> Answer:
        raise HubError(501, "stand-in: no Xet storage; set HF_HUB_DISABLE_XET=1 to upload with LFS")

    def _commit(self, request: HubRequest, type: str, repo: str, rev: str) -> Answer:
        found = self._find(request, TYPES[type], repo, write=True)
        if self.commit_error is not None:
            raise self.commit_error
        if request.query.get("create_pr"):
            raise HubError(400, "stand-in: pull requests are not supported")
        if rev not in found.branches:
            raise HubError(404, f"Invalid rev id: {rev} (commits go to a branch)", "RevisionNotFound")
        lines = [json.loads(line) for line in request.body.splitlines() if line.strip()]
        if not lines or lines[0].get("key") != "header":
            raise HubError(400, "commit payload must start with a header line")
        header = lines[0]["value"]
        head = found.head if rev == "main" else self._find_commit(found, rev)
        parent = header.get("parentCommit")
        if parent and not head.oid.startswith(parent):
            raise HubError(412, f"A commit has happened since. Please refresh and try again. ({parent})")
        files, lfs = dict(head.files), set(head.lfs)
        for line in lines[1:]:
            key, value = line.get("key"), line.get("value", {})
            path = value.get("path", "")
            if key == "file":
                content = value.get("content", "")
                files[path] = (
                    base64.b64decode(content) if value.get("encoding") == "base64" else content.encode()
                )
                lfs.discard(path)
            elif key == "lfsFile":
                if value.get("oid") not in self.lfs_objects:
                    raise HubError(400, f"LFS object {value.get('oid')} of {path} was not uploaded")
                files[path] = self.lfs_objects[value["oid"]]
                lfs.add(path)
            elif key == "deletedFile":
                if files.pop(path, None) is None:
                    raise HubError(404, f"A file with this name doesn't exist: {path}", "EntryNotFound")
            elif key == "deletedFolder":
                folder = path.rstrip("/") + "/"
                for name in [name for name in files if name.startswith(folder)]:
                    del files[name]
            else:
                raise HubError(400, f"stand-in: unsupported commit operation {key!r}")
        title, description = header.get("summary", ""), header.get("description", "")
        commit = self._new_commit(found, rev, title, description, files, lfs)
        url = f"{self.url}/{found.url_path}/commit/{commit.oid}"
        return _json(
            200, {"success": True, "commitOid": commit.oid, "commitUrl": url, "pullRequestUrl": None}
        )

    def _paths_info(self, request: HubRequest, type: str, repo: str, rev: str) -> Answer:
        found = self._find(request, TYPES[type], repo)
        commit = self._find_commit(found, rev)
        if "json" in request.headers.get("content-type", ""):
            form = json.loads(request.body)
            paths, expand = form.get("paths", []), bool(form.get("expand"))
        else:
            form = parse_qs(request.body.decode(), keep_blank_values=True)
            paths, expand = form.get("paths", []), form.get("expand", ["False"])[0].lower() == "true"
        entries = []
        for path in dict.fromkeys(p.strip("/") for p in paths):
            if path in commit.files:
                entries.append(_file_entry(commit, path))
            elif any(name.startswith(path + "/") for name in commit.files):
                entries.append(_folder_entry(commit, path))
            else:
                continue
            if expand:
                entries[-1]["lastCommit"] = _last_commit(found, commit, path)
        return _json(200, entries)

    def _tree(self, request: HubRequest, type: str, repo: str, rev: str, path: str = "") -> Answer:
        found = self._find(request, TYPES[type], repo)
        commit = self._find_commit(found, rev)
        recursive = request.query.get("recursive", ["false"])[0].lower() == "true"
        expand = request.query.get("expand", ["false"])[0].lower() == "true"
        path = path.strip("/")
        prefix = path + "/" if path else ""
        below = [name for name in commit.files if name.startswith(prefix)]
        if path and not below:
            raise HubError(404, f"{path} does not exist on {rev}", "EntryNotFound")
        files, folders = set(), set()
        for name in below:
            parts = name[len(prefix) :].split("/")
            for depth in range(1, len(parts)):
                if recursive or depth == 1:
                    folders.add(prefix + "/".join(parts[:depth]))
            if recursive or len(parts) == 1:
                files.add(name)
        entries = [_folder_entry(commit, p) for p in sorted(folders)] + [
            _file_entry(commit, p) for p in sorted(files)
        ]
        if expand:
            for entry in entries:
                entry["lastCommit"] = _last_commit(found, commit, entry["path"])
        return _json(200, entries)

    def _create_branch(self, request: HubRequest, type: str, repo: str, branch: str) -> Answer:
        found = self._find(request, TYPES[type], repo, write=True)
        if branch in found.branches:
            raise HubError(409, f"Reference already exists: {branch}")
        start = json.loads(request.body or b"{}").get("startingPoint") or "main"
        found.branches[branch] = self._find_commit(found, start).oid
        return _json(200, {})

    def _delete_branch(self, request: HubRequest, type: str, repo: str, branch: str) -> Answer:
        found = self._find(request, TYPES[type], repo, write=True)
        if branch == "main" or found.branches.pop(branch, None) is None:
            raise HubError(400 if branch == "main" else 404, f"cannot delete branch {branch}")
        return _json(200, {})

    def _resolve(self, request: HubRequest, repo: str, rev: str, path: str, prefix: str = "") -> Answer:
        repo_type = TYPES[prefix] if prefix else "model"
        found = self._find(request, repo_type, repo)
        commit = self._find_commit(found, rev)
        if path not in commit.files:
            raise HubError(404, f"Entry not found: {path}", "EntryNotFound")
        data = commit.files[path]
        entry = _file_entry(commit, path)
        etag = entry["lfs"]["oid"] if "lfs" in entry else entry["oid"]
        headers = {
            "Content-Type": "application/octet-stream",
            "ETag": f'"{etag}"',
            "X-Repo-Commit": commit.oid,
            "Accept-Ranges": "bytes",
        }
        if "lfs" in entry:
            headers.update({"X-Linked-Etag": f'"{etag}"', "X-Linked-Size": str(len(data))})
        ranged = re.fullmatch(r"bytes=(\d*)-(\d*)", request.headers.get("range", "").strip())
        if ranged and ranged.group(1) + ranged.group(2):
            first, last = ranged.groups()
            start = int(first) if first else max(len(data) - int(last), 0)
            end = min(int(last), len(data) - 1) if first and last else len(data) - 1
            if start >= len(data) or start > end:
                headers["Content-Range"] = f"bytes */{len(data)}"
                return 416, headers, b""
            headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
            return 206, headers, data[start : end + 1]
        return 200, headers, data


def _json(status: int, value: Any, headers: dict[str, str] | None = None) -> Answer:
    return status, {"Content-Type": "application/json", **(headers or {})}, json.dumps(value).encode()


def _file_entry(commit: Commit, path: str) -> dict[str, Any]:
    data = commit.files[path]
    if path in commit.lfs:
        pointer = lfs_pointer(data)
        lfs = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": len(pointer)}
        return {"type": "file", "oid": git_blob_id(pointer), "size": len(data), "path": path, "lfs": lfs}
    return {"type": "file", "oid": git_blob_id(data), "size": len(data), "path": path}


def _folder_entry(commit: Commit, path: str) -> dict[str, Any]:
    listing = "".join(f"{name}:{git_blob_id(data)}\n" for name, data in sorted(commit.files.items()))
    return {"type": "directory", "oid": hashlib.sha1(f"{path}\n{listing}".encode()).hexdigest(), "path": path}


def _last_commit(repo: Repo, commit: Commit, path: str) -> dict[str, str]:
    """The newest commit, up to ``commit``, that changed ``path`` (a file, or anything under a folder)."""

    def state(c: Commit | None) -> dict[str, bytes]:
        files = c.files if c is not None else {}
        return {k: v for k, v in files.items() if k == path or k.startswith(path + "/")}

    history = repo.history(commit.oid)
    changed = next(
        (c for c, before in zip(history, [*history[1:], None], strict=True) if state(c) != state(before)),
        history[-1],
    )
    return {"id": changed.oid, "title": changed.title, "date": changed.date}


def _card_data(readme: bytes | None) -> dict | None:
    match = re.match(rb"---\r?\n(.*?)\r?\n---", readme or b"", re.S)
    if not match:
        return None
    try:
        data = yaml.safe_load(match.group(1))
    except yaml.YAMLError:
        return None
    return data if isinstance(data, dict) else None


def _handler(hub: HubStandIn) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            url = urlsplit(self.path)
            request = HubRequest(
                method=self.command,
                path=url.path,
                query=parse_qs(url.query, keep_blank_values=True),
                headers={k.lower(): v for k, v in self.headers.items()},
                body=self._body(),
            )
            status, headers, body = hub.handle(request)
            self.send_response(status)
            if "x-amzn-trace-id" in request.headers:  # the Hub echoes the client's request id
                self.send_header("X-Request-Id", request.headers["x-amzn-trace-id"])
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                chunks = []
                while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
                while self.rfile.readline() not in (b"\r\n", b"\n", b""):  # trailers
                    pass
                return b"".join(chunks)
            length = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(length) if length else b""

        do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = _serve

        def log_message(self, format: str, *args: Any) -> None:  # quiet, and never logs headers
            pass

    return Handler
