"""The git credential helper of a sandbox: asks core for a credential on every operation.

Git runs `python -m sandbox.credential_helper get` and writes `key=value` lines describing the
remote (protocol, host, path). We pass them on to core with the sandbox token and the operation
(`read` unless the supervisor set `OPEN_INSPECT_GIT_OPERATION=write` for a push core started),
and print what core hands out. Nothing is ever stored: `store` does nothing, so the next
operation asks again. `erase` (git's server refused the credential) tells core the credential's
fingerprint, never the credential, so that core stops handing out a token that was revoked or
expired early.

Git starts this for every authenticated request, so it uses the standard library only.
When core refuses, we print nothing and exit 0: git then fails with an authentication error
(it never prompts, since `GIT_TERMINAL_PROMPT=0`).
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import os
import socket
import sys
import urllib.error
import urllib.request
from typing import IO, Any

DEFAULT_HTTP_PATH = "/git/credentials"
DEFAULT_TIMEOUT = 10.0
_FORWARDED_KEYS = ("protocol", "host", "path")
_FINGERPRINT_CHARS = 12  # as core.github.app.fingerprint: a sha256 hex prefix


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, socket_path: str, timeout: float) -> None:
        super().__init__("core", timeout=timeout)
        self._socket_path = socket_path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._socket_path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    # A redirect would carry the Authorization header to wherever it points.
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def read_request(stream: IO[str], keys: tuple[str, ...] = _FORWARDED_KEYS) -> dict[str, str]:
    """Git's description of the remote: `key=value` lines up to a blank line or EOF."""
    fields: dict[str, str] = {}
    for line in stream:
        line = line.rstrip("\n")
        if not line:
            break
        key, sep, value = line.partition("=")
        if sep and key in keys:
            fields[key] = value
    return fields


def split_unix_url(url: str) -> tuple[str, str]:
    """`unix:/run/core.sock:/git/credentials` → (`/run/core.sock`, `/git/credentials`)."""
    rest = url[len("unix:") :]
    socket_path, sep, http_path = rest.rpartition(":/")
    if not sep:
        return rest, DEFAULT_HTTP_PATH
    return socket_path, "/" + http_path


def post(url: str, token: str, body: bytes, timeout: float) -> tuple[int, bytes]:
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    if url.startswith("unix:"):
        socket_path, http_path = split_unix_url(url)
        conn = _UnixHTTPConnection(socket_path, timeout)
        try:
            conn.request("POST", http_path, body=body, headers=headers)
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()
    # Core is reached directly: the sandbox token must not pass through an egress proxy.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirects())
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with opener.open(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _credential(payload: bytes) -> tuple[str, str] | None:
    try:
        data = json.loads(payload)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    username, password = data.get("username"), data.get("password")
    if not isinstance(username, str) or not isinstance(password, str) or not password:
        return None
    # A newline would let the answer inject extra keys into git's credential protocol.
    if any(c in value for value in (username, password) for c in "\n\r\0"):
        return None
    return username, password


def _refusal(status: int, payload: bytes) -> str:
    try:
        error = json.loads(payload).get("error")
    except (ValueError, AttributeError):
        error = None
    reason = error if isinstance(error, str) else "no credential"
    return f"open-inspect credential helper: core answered {status}: {reason[:200]}"


def get(stdin: IO[str], stdout: IO[str], stderr: IO[str], env: dict[str, str]) -> None:
    fields = read_request(stdin)
    url, token = env.get("OPEN_INSPECT_CREDENTIALS_URL"), env.get("OPEN_INSPECT_SANDBOX_TOKEN")
    if not url or not token:
        print("open-inspect credential helper: not configured", file=stderr)
        return
    body = json.dumps(
        {
            "protocol": fields.get("protocol", ""),
            "host": fields.get("host", ""),
            "path": fields.get("path", ""),
            "operation": env.get("OPEN_INSPECT_GIT_OPERATION", "read"),
        }
    ).encode()
    timeout = float(env.get("OPEN_INSPECT_CREDENTIALS_TIMEOUT") or DEFAULT_TIMEOUT)
    try:
        status, payload = post(url, token, body, timeout)
    except (OSError, http.client.HTTPException) as exc:
        # The exception names the address at most, never the headers we sent.
        print(f"open-inspect credential helper: core unreachable: {exc}", file=stderr)
        return
    credential = _credential(payload) if status == 200 else None
    if credential is None:
        print(_refusal(status, payload), file=stderr)
        return
    stdout.write(f"username={credential[0]}\npassword={credential[1]}\n")
    stdout.flush()


def erase(stdin: IO[str], env: dict[str, str]) -> None:
    """Git's server refused the credential we printed: tell core which one (by fingerprint)."""
    fields = read_request(stdin, (*_FORWARDED_KEYS, "password"))
    url, token = env.get("OPEN_INSPECT_CREDENTIALS_URL"), env.get("OPEN_INSPECT_SANDBOX_TOKEN")
    password = fields.pop("password", "")
    if not url or not token or not password:
        return
    digest = hashlib.sha256(password.encode()).hexdigest()[:_FINGERPRINT_CHARS]
    body = json.dumps({**fields, "operation": "reject", "fingerprint": digest}).encode()
    timeout = float(env.get("OPEN_INSPECT_CREDENTIALS_TIMEOUT") or DEFAULT_TIMEOUT)
    # Best effort: git fails the operation either way, and the next one asks again.
    with contextlib.suppress(OSError, http.client.HTTPException):
        post(url, token, body, timeout)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] == "get":
        get(sys.stdin, sys.stdout, sys.stderr, dict(os.environ))
    elif args and args[0] == "erase":
        erase(sys.stdin, dict(os.environ))
    else:
        # store: nothing is kept between operations, so there is nothing to do.
        sys.stdin.read()
    return 0


if __name__ == "__main__":
    sys.exit(main())
