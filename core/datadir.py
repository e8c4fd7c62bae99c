"""The data directory: the engine lock, the running engine's address, and keys generated for
embedded mode."""

from __future__ import annotations

import base64
import fcntl
import json
import os
import secrets
from pathlib import Path
from typing import Any

from core.errors import EngineBusy

_KEY_NAMES = ("secrets_key", "link_secret")


class DataDir:
    def __init__(self, path: Path) -> None:
        self.path = path.expanduser().resolve()
        self._lock_fd: int | None = None

    def ensure(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True, mode=0o700)

    @property
    def postgres(self) -> Path:
        return self.path / "postgres"

    # ----- one engine per data dir ------------------------------------------------------------

    def lock_engine(self) -> None:
        """Hold the data dir for this process's lifetime; EngineBusy if another engine does."""
        self.ensure()
        fd = os.open(self.path / "engine.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            running = self.running_engine() or {}
            where = f" (pid {running.get('pid')}, {running.get('http_url')})" if running else ""
            raise EngineBusy(
                f"Another engine is already running on the data dir {self.path}{where}. "
                "Stop it first, or give this one its own OPEN_INSPECT_DATA_DIR."
            ) from None
        self._lock_fd = fd

    def announce(self, info: dict[str, Any]) -> None:
        """Tell other commands how to reach the engine that holds the lock."""
        _write_private(self.path / "engine.json", json.dumps(info))

    def running_engine(self) -> dict[str, Any] | None:
        """What the running engine announced, or None when no engine holds the data dir."""
        lock = self.path / "engine.lock"
        if not lock.exists():
            return None
        fd = os.open(lock, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                return json.loads((self.path / "engine.json").read_text())
            except (OSError, ValueError):
                return {}
        else:
            fcntl.flock(fd, fcntl.LOCK_UN)
            return None
        finally:
            os.close(fd)

    def release(self) -> None:
        if self._lock_fd is not None:
            (self.path / "engine.json").unlink(missing_ok=True)
            os.close(self._lock_fd)
            self._lock_fd = None

    # ----- generated keys (embedded mode) -----------------------------------------------------

    def generated_keys(self) -> dict[str, str]:
        """Keys made once for this data dir (mode 0600), so restarts and every command agree."""
        self.ensure()
        path = self.path / "keys.json"
        keys: dict[str, str] = {}
        if path.exists():
            keys = json.loads(path.read_text())
        missing = [name for name in _KEY_NAMES if name not in keys]
        if missing:
            for name in missing:
                keys[name] = base64.b64encode(secrets.token_bytes(32)).decode()
            _write_private(path, json.dumps(keys))
        return keys


def _write_private(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.replace(tmp, path)
