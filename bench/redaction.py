"""Redaction speed: 50 secrets over 1 MB of tool output (compiler errors, logs, paths, JSON).

Scenarios, each the median of five runs: the output holds no secret (the common case), the
output holds a few values and tokens, the credential shapes alone (no secrets configured), and
the stream form fed the output in 64-byte pieces. The baseline, measured in the same run, is
`str.replace` of the 50 raw values alone (no encoded forms, no shapes, no overlap handling).

    python -m bench.redaction
"""

from __future__ import annotations

import json
import random
import secrets
import statistics
import time
from collections.abc import Callable

from bench.common import header
from core.redaction import Redactor

SIZE = 1_000_000
RUNS = 5

_WORDS = (
    "the error at line import def return self value File Traceback INFO DEBUG WARN npm "
    "deprecated package@1.2.3 0x7f3a status=200 GET POST /api/v1/items?id=123 "
    "/usr/lib/python3/site-packages/requests/sessions.py 2026-11-01T10:00:00Z "
    '{"key": "value", "count": 3} assert expected got None True False ok FAILED passed '
    "src/checkout/cart.ts:128:7 TypeError: cannot read properties of undefined"
).split()


def tool_output(rng: random.Random) -> str:
    lines, size = [], 0
    while size < SIZE:
        line = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(4, 16)))
        lines.append(line)
        size += len(line) + 1
    return "\n".join(lines)[:SIZE]


def median_rate(work: Callable[[], object], size: int) -> float:
    times = []
    for _ in range(RUNS):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return size / statistics.median(times) / 1e6


def main() -> None:
    rng = random.Random(7)
    values = {f"SECRET_{i}": secrets.token_urlsafe(rng.randint(12, 40)) for i in range(50)}
    started = time.perf_counter()
    redactor = Redactor(values)
    build_ms = (time.perf_counter() - started) * 1000
    clean = tool_output(rng)
    dirty = list(clean)
    for name in ("SECRET_3", "SECRET_17", "SECRET_42"):
        at = rng.randrange(len(dirty))
        dirty[at] = f" {values[name]} "
    dirty[rng.randrange(len(dirty))] = " ghp_" + "A1b2C3" * 6 + " "
    with_values = "".join(dirty)

    def replace_baseline() -> str:
        text = clean
        for name, value in values.items():
            text = text.replace(value, f"[REDACTED:{name}]")
        return text

    def streamed() -> str:
        stream = redactor.stream()
        out = [stream.feed(clean[i : i + 64]) for i in range(0, len(clean), 64)]
        return "".join(out) + stream.flush()

    assert redactor.redact(clean) == clean
    assert all(v not in redactor.redact(with_values) for v in values.values())
    assert streamed() == clean
    shapes = Redactor({})
    report = {
        **header("redaction"),
        "secrets": len(values),
        "text_bytes": SIZE,
        "build_ms": round(build_ms, 1),
        "no_value_in_text_mb_per_s": round(median_rate(lambda: redactor.redact(clean), SIZE), 1),
        "values_in_text_mb_per_s": round(
            median_rate(lambda: redactor.redact(with_values), len(with_values)), 1
        ),
        "shapes_only_mb_per_s": round(median_rate(lambda: shapes.redact(clean), SIZE), 1),
        "stream_64_byte_pieces_mb_per_s": round(median_rate(streamed, SIZE), 1),
        "baseline_str_replace_raw_values_mb_per_s": round(median_rate(replace_baseline, SIZE), 1),
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
