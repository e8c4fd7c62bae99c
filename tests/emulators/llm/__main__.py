"""Run the LLM emulator in the foreground so a person can point the system at it:

python -m tests.emulators.llm --port 8089 --script script.json --record requests.jsonl
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from tests.emulators import run_command_line, serve_until_stopped
from tests.emulators.llm.server import LLMEmulator


def _parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.emulators.llm", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8089)
    parser.add_argument("--script", type=Path, help="JSON list of turns: {text, tool_calls}")
    parser.add_argument("--record", type=Path, help="append every request here as JSONL")
    parser.add_argument("--api-key", default="emulator-key")
    parser.add_argument("--canned-text", default="Scripted title")
    return parser.parse_args()


async def _serve(args: argparse.Namespace) -> None:
    script = json.loads(args.script.read_text()) if args.script else []
    if not isinstance(script, list):
        raise SystemExit(f"{args.script}: expected a JSON list of turns")
    emulator = LLMEmulator(
        script=script,
        api_key=args.api_key,
        record_path=args.record,
        canned_text=args.canned_text,
    )
    await emulator.start(args.host, args.port)
    print(f"LLM emulator: {len(script)} scripted turns, API key {args.api_key!r}")
    print(f"  ANTHROPIC_BASE_URL={emulator.url}")
    print(f"  OPENAI_BASE_URL={emulator.openai_base_url}")
    if args.record:
        print(f"  recording requests to {args.record}")
    print("Ctrl-C to stop.", flush=True)
    await serve_until_stopped(emulator)


def main() -> None:
    args = _parse_args()
    run_command_line(lambda: _serve(args))


if __name__ == "__main__":
    main()
