"""What model calls cost: USD per million tokens, looked up by the longest matching model-name
prefix, so dated ids (`claude-sonnet-4-5-20250929`, `gpt-4o-2024-08-06`) find their family.

The defaults are the providers' published list prices. Operators override or add entries with
`OPEN_INSPECT_MODEL_PRICES="prefix=in:out,prefix=in:out[:cache_read[:cache_write]]"`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import NamedTuple

from core.errors import ConfigError

log = logging.getLogger(__name__)

_MILLION = 1_000_000


class Price(NamedTuple):
    """USD per million tokens. Cache prices left as None are charged as ordinary input, which
    over- rather than under-counts when a spend cap is in force."""

    input: float
    output: float
    cache_read: float | None = None
    cache_write: float | None = None


def _anthropic(input: float, output: float) -> Price:
    # Anthropic bills cache reads at 0.1x and five-minute cache writes at 1.25x the input price.
    return Price(input, output, round(input * 0.1, 6), round(input * 1.25, 6))


DEFAULT_PRICES: Mapping[str, Price] = {
    # Anthropic. Family prefixes catch models newer than this table.
    "claude-opus": _anthropic(5, 25),
    "claude-opus-4": _anthropic(15, 75),
    "claude-opus-4-5": _anthropic(5, 25),
    "claude-opus-4-6": _anthropic(5, 25),
    "claude-3-opus": _anthropic(15, 75),
    "claude-sonnet": _anthropic(3, 15),
    "claude-3-7-sonnet": _anthropic(3, 15),
    "claude-3-5-sonnet": _anthropic(3, 15),
    "claude-haiku": _anthropic(1, 5),
    "claude-3-5-haiku": _anthropic(0.8, 4),
    "claude-3-haiku": _anthropic(0.25, 1.25),
    # OpenAI. The cached-input discount differs by model, so it is listed per model.
    "gpt-4.1": Price(2, 8, 0.5),
    "gpt-4.1-mini": Price(0.4, 1.6, 0.1),
    "gpt-4.1-nano": Price(0.1, 0.4, 0.025),
    "gpt-4o": Price(2.5, 10, 1.25),
    "gpt-4o-mini": Price(0.15, 0.6, 0.075),
    "gpt-5": Price(1.25, 10, 0.125),
    "gpt-5-mini": Price(0.25, 2, 0.025),
    "gpt-5-nano": Price(0.05, 0.4, 0.005),
    "o1": Price(15, 60, 7.5),
    "o1-mini": Price(1.1, 4.4, 0.55),
    "o1-pro": Price(150, 600),
    "o3": Price(2, 8, 0.5),
    "o3-mini": Price(1.1, 4.4, 0.55),
    "o3-pro": Price(20, 80),
    "o4-mini": Price(1.1, 4.4, 0.275),
}


def parse_prices(spec: str | None) -> dict[str, Price]:
    """Parse `prefix=in:out[:cache_read[:cache_write]],…` (USD per million tokens). Anthropic's
    cache multipliers are the same for every model, so `claude…` entries get them unless given;
    other entries without cache prices charge cached input as ordinary input."""
    prices: dict[str, Price] = {}
    for item in (spec or "").split(","):
        item = item.strip()
        if not item:
            continue
        prefix, sep, numbers = item.partition("=")
        prefix = prefix.strip().lower()
        fields = numbers.split(":")
        if not sep or not prefix or not 2 <= len(fields) <= 4:
            raise ConfigError(
                f"model price {item!r} is not of the form model-prefix=input:output "
                "(USD per million tokens, e.g. claude-sonnet-4=3:15)"
            )
        try:
            values = [float(field) for field in fields]
        except ValueError:
            raise ConfigError(
                f"model price {item!r}: {numbers!r} must be numbers like 3:15"
            ) from None
        if any(value < 0 for value in values):
            raise ConfigError(f"model price {item!r}: prices cannot be negative")
        if prefix.startswith("claude") and len(values) == 2:
            prices[prefix] = _anthropic(*values)
        else:
            prices[prefix] = Price(*values)
    return prices


class Pricing:
    def __init__(self, prices: Mapping[str, Price | tuple[float, ...]] = DEFAULT_PRICES) -> None:
        entries = {prefix.lower(): Price(*price) for prefix, price in prices.items()}
        # Longest first, so the first match is the most specific one.
        self._prices = sorted(entries.items(), key=lambda entry: len(entry[0]), reverse=True)
        self._unknown: set[str] = set()

    @classmethod
    def parse(cls, spec: str | None) -> Pricing:
        """The defaults, with entries from an `OPEN_INSPECT_MODEL_PRICES` string on top."""
        return cls({**DEFAULT_PRICES, **parse_prices(spec)})

    def price(self, model: str) -> Price | None:
        name = model.lower()
        for prefix, price in self._prices:
            if name.startswith(prefix):
                return price
        return None

    def cost(
        self,
        model: str,
        input_tokens: int,
        output_tokens: int,
        *,
        cache_read_tokens: int = 0,
        cache_write_tokens: int = 0,
    ) -> float:
        """USD for one call. `input_tokens` counts every input token; the cache counts say how
        many of them were cache reads and cache writes, which are priced differently."""
        price = self.price(model)
        if price is None:
            if model not in self._unknown:
                self._unknown.add(model)
                log.warning(
                    "no price for model %r: its calls count as free "
                    "(OPEN_INSPECT_MODEL_PRICES can set one)",
                    model,
                )
            return 0.0
        plain = max(input_tokens - cache_read_tokens - cache_write_tokens, 0)
        cache_read = price.input if price.cache_read is None else price.cache_read
        cache_write = price.input if price.cache_write is None else price.cache_write
        total = (
            plain * price.input
            + cache_read_tokens * cache_read
            + cache_write_tokens * cache_write
            + output_tokens * price.output
        )
        return total / _MILLION
