"""Sandbox start-up: from submitting a prompt to the sandbox's first model request.

Each run is a new session (a new thread) on a real engine with local sandboxes: the prompt is
queued, the actor starts a sandbox, the sandbox clones the repository (borrowing from the host's
mirror), imports its runtime, connects its bridge and asks the model. The model is the LLM
emulator, so the figure is the engine's and the sandbox's own cost. Scenarios:

- cold: a repository of 10 commits, after its mirror exists, no warm pool;
- cold_big_repo: a repository of 5,000 commits (~30 MB), after its mirror exists, no warm pool;
- warm: the small repository with a warm pool of 2, each run claiming a sandbox that has
  finished starting (the pool refills between runs, outside the timing);
- opencode_cold, opencode_warm: the same two with OpenCode as the agent (its server starts in
  the sandbox once the workspace is ready), with the memory of its server (RSS) after the run;

and the floors in the same run: a bare interpreter start and a `git clone --reference` of the
small repository.

    python -m bench.sandbox_start [--runs 20]

Environment: OPEN_INSPECT_BENCH_DATABASE_URL (see bench/common.py). Prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from bench.common import header, scratch_database
from core import runtime
from core.config import Settings
from core.crypto import generate_key
from core.datadir import DataDir
from core.models import Author
from tests.emulators.llm.server import LLMEmulator

KEY = "sk-ant-bench-provider-key-0123456789"
AUTHOR = Author("slack:T1:UBENCH", "Bench", "bench@example.com")
ANSWER = [{"text": "Nothing to do."}]


def git(*args: str, cwd: Path | None = None, stdin: bytes | None = None) -> None:
    subprocess.run(["git", *args], cwd=cwd, input=stdin, check=True, capture_output=True)


def make_history(bare: Path, commits: int, blob_bytes: int) -> None:
    """A bare repository of `commits` commits, each rewriting one file with `blob_bytes` of
    incompressible data, written in one `git fast-import` stream."""
    git("init", "--quiet", "--bare", "--initial-branch=main", str(bare))
    stream = bytearray()
    for n in range(1, commits + 1):
        blob = os.urandom(blob_bytes // 2).hex().encode()
        message = f"change {n}\n".encode()
        stream += b"commit refs/heads/main\n"
        stream += f"committer Bench <bench@example.com> {1_700_000_000 + n} +0000\n".encode()
        stream += b"data %d\n%s" % (len(message), message)
        stream += b"M 644 inline data.txt\ndata %d\n%s\n" % (len(blob), blob)
        stream += b"M 644 inline README.md\ndata 7\n# bench\n\n"
    git("fast-import", "--quiet", cwd=bare, stdin=bytes(stream))


def size_mb(path: Path) -> float:
    return round(sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 1e6, 1)


def summary(samples: list[float]) -> dict:
    ordered = sorted(samples)
    return {
        "runs": len(ordered),
        "p50_ms": round(statistics.median(ordered) * 1000, 1),
        "p95_ms": round(ordered[max(0, round(len(ordered) * 0.95) - 1)] * 1000, 1),
        "min_ms": round(ordered[0] * 1000, 1),
        "max_ms": round(ordered[-1] * 1000, 1),
    }


def rss_mb(pattern: str) -> list[float]:
    """Resident memory of each process whose command line contains `pattern`."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if pattern.encode() not in (proc / "cmdline").read_bytes().replace(b"\0", b" "):
                continue
            status = (proc / "status").read_text()
        except OSError:
            continue
        kb = next((line.split()[1] for line in status.splitlines() if line.startswith("VmRSS")), 0)
        found.append(round(int(kb) / 1024, 1))
    return found


async def first_request(engine: object, llm: LLMEmulator, repository: str) -> float:
    """Seconds from submitting a prompt in a new thread to the model's first request."""
    thread = f"slack:T1:CBENCH:{uuid.uuid4().hex[:12]}"
    seen = len(llm.requests)
    started = time.perf_counter()
    receipt = await engine.submit_prompt(
        f"{thread}:1", thread, AUTHOR, "hello", repository=repository
    )
    while len(llm.requests) == seen:  # noqa: ASYNC110 - 1 ms polling is the resolution
        await asyncio.sleep(0.001)
    elapsed = time.perf_counter() - started
    MEMORY.extend(rss_mb("opencode serve"))
    await engine.stop(receipt.session_id, "bench")
    return elapsed


MEMORY: list[float] = []  # OpenCode servers' RSS, noted at each first request


async def pool_full(engine: object, size: int) -> None:
    provider = engine._ctx.provider
    while len(provider._warm) < size or not all(s.claimable for s in provider._warm):  # noqa: ASYNC110
        await asyncio.sleep(0.01)


async def scenario(
    engine: object, llm: LLMEmulator, repository: str, runs: int, warm: int = 0
) -> dict:
    await first_request(engine, llm, repository)  # builds the mirror; not counted
    samples = []
    for _ in range(runs):
        await pool_full(engine, warm)
        samples.append(await first_request(engine, llm, repository))
    return summary(samples)


def timed(command: list[str], cwd: Path) -> float:
    started = time.perf_counter()
    subprocess.run(command, cwd=cwd, check=True, capture_output=True)
    return time.perf_counter() - started


def floors(small: Path, mirror: Path, runs: int, scratch: Path) -> dict:
    interpreter = [timed([sys.executable, "-c", "pass"], scratch) for _ in range(runs)]
    clones = []
    for n in range(runs):
        clone = ["git", "clone", "--quiet", "--reference", str(mirror), str(small), f"c{n}"]
        clones.append(timed(clone, scratch))
    return {"interpreter_start": summary(interpreter), "git_clone_reference": summary(clones)}


async def main(runs: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="oi-bench-") as tmp:
        root = Path(tmp)
        small, big = root / "small.git", root / "big.git"
        make_history(small, 10, 9_600)
        make_history(big, 5_000, 9_600)
        llm = LLMEmulator(script=ANSWER, api_key=KEY)
        await llm.start()
        result = {
            **header("sandbox_start"),
            "isolation": "auto" if shutil.which("bwrap") else "none",
            "repositories": {"small_mb": size_mb(small), "big_mb": size_mb(big)},
        }
        opencode_dir = Path.home() / ".cache" / "open-inspect-bench" / "opencode"
        for agent, warm in (("builtin", 0), ("builtin", 2), ("opencode", 0), ("opencode", 2)):
            async with scratch_database() as database_url:
                settings = Settings(
                    database_url=database_url,
                    data_dir=root / f"data-{agent}-{warm}",
                    http_port=0,
                    secrets_key=generate_key(),
                    link_secret=generate_key(),
                    repositories=[f"bench/small={small}", f"bench/big={big}"],
                    anthropic_base_url=llm.url,
                    anthropic_api_key=KEY,
                    model="anthropic:claude-sonnet-4-6",
                    idle_seconds=1.0,  # finished sessions give their sandbox back promptly
                    warm_pool=warm,
                    agent=agent,
                    opencode_dir=opencode_dir,
                )
                running = await runtime.start(settings, DataDir(settings.data_dir))
                try:
                    engine = running.engine
                    prefix = "opencode_" if agent == "opencode" else ""
                    MEMORY.clear()
                    if warm:
                        result[f"{prefix}warm"] = await scenario(
                            engine, llm, "bench/small", runs, warm
                        )
                    else:
                        result[f"{prefix}cold"] = await scenario(engine, llm, "bench/small", runs)
                        if agent == "builtin":
                            result["cold_big_repo"] = await scenario(engine, llm, "bench/big", runs)
                    if MEMORY:
                        result[f"{prefix}{'warm' if warm else 'cold'}"]["server_rss_mb_p50"] = (
                            statistics.median(MEMORY)
                        )
                finally:
                    await running.close()
        await llm.stop()
        (root / "floors").mkdir()
        mirror = next((root / "data-builtin-0" / "mirrors").glob("bench_small-*.git"))
        result["floors"] = floors(small, mirror, runs, root / "floors")
        cold, big_cold = result["cold"]["p50_ms"], result["cold_big_repo"]["p50_ms"]
        result["history_effect_pct"] = round((big_cold - cold) / cold * 100, 1)
        return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    print(json.dumps(asyncio.run(main(parser.parse_args().runs)), indent=2))
