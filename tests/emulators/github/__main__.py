"""Run the GitHub emulator alone, to drive the whole system locally:

    python -m tests.emulators.github --port 8091

It prints, as JSON, the variables to start the system with (GITHUB_API_URL, GITHUB_WEB_URL,
GITHUB_APP_ID, GITHUB_APP_PRIVATE_KEY_PATH, GITHUB_APP_INSTALLATION_ID, GITHUB_CLIENT_ID,
GITHUB_CLIENT_SECRET) and what it holds: people octo (private email) and hubot, repositories
acme/calc (private) and acme/website (public), the App installed on acme. The App's private
key is written to a temporary file, removed when the emulator stops (Ctrl-C).

    git clone http://x-access-token:<installation token>@127.0.0.1:8091/acme/calc.git
    curl -s localhost:8091/_emulator/as_user -d '{"login": "hubot"}'   who approves OAuth
    curl -s localhost:8091/_emulator/state                             people, repos, PRs
    curl -s localhost:8091/_emulator/journal                           every call made
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import tempfile
from pathlib import Path

from tests.emulators import run_command_line, serve_until_stopped
from tests.emulators.github.server import GitHubEmulator


def _parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tests.emulators.github",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8091)
    parser.add_argument("--app-id", type=int, default=424242)
    parser.add_argument("--installation-id", type=int, default=4242)
    parser.add_argument("--private-key", type=Path, help="the App's PEM key (default: a new one)")
    parser.add_argument("--root", type=Path, help="keep bare repositories here (default: temp)")
    parser.add_argument("--as-user", default="octo", help="who approves the OAuth page")
    return parser.parse_args()


async def _serve(args: argparse.Namespace) -> None:
    emulator = GitHubEmulator(
        app_id=args.app_id,
        installation_id=args.installation_id,
        private_key_pem=args.private_key.read_text() if args.private_key else None,
        root=args.root,
        seed=True,
    )
    emulator.as_user(args.as_user)
    await emulator.start(args.host, args.port)
    fd, key_path = tempfile.mkstemp(prefix="github-emulator-app-", suffix=".pem")
    try:
        with os.fdopen(fd, "w") as key_file:  # mkstemp's file is readable by its owner only
            key_file.write(emulator.private_key_pem)
        described = emulator.describe()
        print(json.dumps({
            "GITHUB_API_URL": emulator.api_url,
            "GITHUB_WEB_URL": emulator.url,
            "GITHUB_APP_ID": str(emulator.app_id),
            "GITHUB_APP_PRIVATE_KEY_PATH": key_path,
            "GITHUB_APP_INSTALLATION_ID": str(emulator.installation.id),
            "GITHUB_CLIENT_ID": emulator.client_id,
            "GITHUB_CLIENT_SECRET": emulator.client_secret,
            "people": described["people"],
            "repositories": described["repositories"],
            "signed in": emulator.signed_in,
            "choose who signs in": f"POST {emulator.url}/_emulator/as_user {{\"login\": ...}}",
        }, indent=2), flush=True)  # fmt: skip
        await serve_until_stopped(emulator)
    finally:
        os.unlink(key_path)


def main() -> None:
    args = _parse_args()
    # Terminated like interrupted: stop serving and remove the key file.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    run_command_line(lambda: _serve(args))


if __name__ == "__main__":
    main()
