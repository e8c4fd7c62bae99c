"""A real git smart-HTTP server for tests: `git http-backend` behind aiohttp, with Basic auth.

Bare repositories live under one root and are served at `/<name>.git`. The password of the
Basic credentials is the token: fetching and cloning (upload-pack) take a read or a write token,
pushing (receive-pack) takes a write token. Every request is recorded with the token it carried,
so a test can tell which credential git used for what.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import os
import subprocess
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

log = logging.getLogger(__name__)

UPLOAD_PACK = "git-upload-pack"
RECEIVE_PACK = "git-receive-pack"
_CHUNK = 64 * 1024


@dataclass(frozen=True)
class GitRequest:
    method: str
    path: str
    service: str
    token: str | None


def isolated_git_env() -> dict[str, str]:
    """This machine's environment without its system or global git configuration."""
    return {**os.environ, "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull}


def git(*args: str | Path, cwd: Path | None = None) -> str:
    """Run git for test setup and assertions, outside any sandbox; returns stdout."""
    result = subprocess.run(
        ["git", *map(str, args)],
        cwd=cwd,
        env=isolated_git_env(),
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise AssertionError(f"git {' '.join(map(str, args))} failed:\n{result.stderr}")
    return result.stdout


def _commit(work: Path, files: dict[str, str], message: str) -> None:
    """Write `files` into the work tree and commit them all."""
    for path, content in files.items():
        (work / path).parent.mkdir(parents=True, exist_ok=True)
        (work / path).write_text(content)
    git("add", "--all", cwd=work)
    author = ["-c", "user.name=Repo Maker", "-c", "user.email=maker@example.com"]
    git(*author, "commit", "--quiet", "--message", message, cwd=work)


def add_branch(bare: Path, branch: str, files: dict[str, str], start: str = "main") -> str:
    """Push a branch `branch` to the bare repository: `start` plus one commit of `files`.
    Returns the branch's commit."""
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp) / "work"
        git("clone", "--quiet", "--branch", start, bare, work)
        git("switch", "--quiet", "--create", branch, cwd=work)
        _commit(work, files, f"Start {branch}")
        git("push", "--quiet", "origin", branch, cwd=work)
        return git("rev-parse", "HEAD", cwd=work).strip()


def make_repo(root: Path, name: str, files: dict[str, str]) -> Path:
    """A bare repository `root/<name>.git` with one commit of `files` on `main`."""
    bare = root / f"{name}.git"
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        git("init", "--quiet", "--initial-branch=main", work)
        _commit(work, files, "Initial commit")
        git("init", "--quiet", "--bare", "--initial-branch=main", bare)
        git("config", "http.receivepack", "true", cwd=bare)
        git("push", "--quiet", bare, "main", cwd=work)
    return bare


def service_of(request: web.Request) -> str:
    """Which git service a smart-HTTP request is for."""
    if request.query.get("service") == RECEIVE_PACK or request.path.endswith(f"/{RECEIVE_PACK}"):
        return RECEIVE_PACK
    return UPLOAD_PACK


def basic_password(request: web.Request) -> str | None:
    """The password of a request's Basic credentials, which git sends as its token."""
    header = request.headers.get("Authorization", "")
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded, validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    return decoded.partition(":")[2]


class GitServer:
    def __init__(
        self, root: Path, read_tokens: Iterable[str] = (), write_tokens: Iterable[str] = ()
    ) -> None:
        self.root = root
        self.read_tokens = set(read_tokens)
        self.write_tokens = set(write_tokens)
        self.requests: list[GitRequest] = []
        self.base_url = ""
        self._runner: web.AppRunner | None = None

    def url(self, name: str) -> str:
        return f"{self.base_url}/{name}.git"

    def tokens_used(self, service: str) -> set[str | None]:
        return {r.token for r in self.requests if r.service == service}

    async def start(self) -> str:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        # http-backend undoes the client's gzip itself, as it would behind a real web server.
        self._runner = web.AppRunner(app, auto_decompress=False, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.base_url = f"http://{host}:{port}"
        return self.base_url

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def __aenter__(self) -> GitServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        service, token = service_of(request), basic_password(request)
        self.requests.append(GitRequest(request.method, request.path, service, token))
        allowed = (
            self.write_tokens if service == RECEIVE_PACK else (self.read_tokens | self.write_tokens)
        )
        if token not in allowed:
            return web.Response(
                status=401,
                text="authentication required\n",
                headers={"WWW-Authenticate": 'Basic realm="git"'},
            )
        user = "writer" if token in self.write_tokens else "reader"
        return await http_backend(request, self.root, request.path, user)


async def http_backend(
    request: web.Request, root: Path, path_info: str, remote_user: str
) -> web.StreamResponse:
    """Answer a smart-HTTP request with `git http-backend` over the bare repositories under
    `root`; `path_info` names the repository and service (`/acme/calc.git/info/refs`). The
    caller has decided already that `remote_user` may do what the request asks."""
    env = {
        **isolated_git_env(),
        "GIT_PROJECT_ROOT": str(root),
        "GIT_HTTP_EXPORT_ALL": "1",
        "PATH_INFO": path_info,
        "QUERY_STRING": request.query_string,
        "REQUEST_METHOD": request.method,
        "CONTENT_TYPE": request.headers.get("Content-Type", ""),
        "REMOTE_USER": remote_user,
        "REMOTE_ADDR": request.remote or "127.0.0.1",
    }
    for header, variable in (
        ("Content-Length", "CONTENT_LENGTH"),
        ("Content-Encoding", "HTTP_CONTENT_ENCODING"),
        ("Git-Protocol", "GIT_PROTOCOL"),
    ):
        if header in request.headers:
            env[variable] = request.headers[header]
    proc = await asyncio.create_subprocess_exec(
        "git",
        "http-backend",
        env=env,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    feeding = asyncio.ensure_future(_feed(request, proc.stdin))
    errors = asyncio.ensure_future(proc.stderr.read())
    try:
        status, headers = await _read_cgi_headers(proc.stdout)
        response = web.StreamResponse(status=status, headers=headers)
        await response.prepare(request)
        while chunk := await proc.stdout.read(_CHUNK):
            await response.write(chunk)
        await response.write_eof()
        await feeding
    finally:
        if proc.returncode is None and not feeding.done():
            feeding.cancel()
        await proc.wait()
        stderr = (await errors).decode(errors="replace").strip()
        if stderr:
            log.info("git http-backend %s: %s", request.path, stderr)
    return response


async def _feed(request: web.Request, stdin: asyncio.StreamWriter) -> None:
    try:
        async for chunk in request.content.iter_chunked(_CHUNK):
            stdin.write(chunk)
            await stdin.drain()
    except (BrokenPipeError, ConnectionResetError):
        pass  # http-backend answered without reading everything (an error response)
    finally:
        stdin.close()


async def _read_cgi_headers(stdout: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    status, headers = 200, {}
    while raw := await stdout.readline():
        line = raw.decode("latin-1").rstrip("\r\n")
        if not line:
            return status, headers
        name, _, value = line.partition(":")
        if name.lower() == "status":
            status = int(value.strip().split()[0])
        else:
            headers[name.strip()] = value.strip()
    # http-backend ended before finishing its headers: it failed.
    return 502, {}
