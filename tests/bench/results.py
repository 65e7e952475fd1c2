"""What a scenario measured, and the percentile arithmetic."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of an ascending sequence (q in 0..100)."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


@dataclass
class Phase:
    """One measured phase: `burst` (as fast as possible) or `paced` (a fixed send rate)."""

    name: str
    unit: str  # "msg" or "req"
    sent: int
    received: int  # distinct items that arrived
    seconds: float  # first send -> last receive
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    target_rate: float | None = None  # paced phases: the send rate asked for
    duplicates: int = 0
    # first send -> last broker ack of the inputs: close to `seconds` means the sender limited it
    send_seconds: float | None = None

    @property
    def lost(self) -> int:
        return self.sent - self.received

    @property
    def throughput(self) -> float:
        return self.received / self.seconds if self.seconds > 0 else 0.0

    @classmethod
    def measure(cls, name: str, unit: str, sent: int, first_send: float, last_receive: float,
                latencies_s: Sequence[float], *, target_rate: float | None = None,
                duplicates: int = 0, send_seconds: float | None = None) -> Phase:
        ms = sorted(x * 1000 for x in latencies_s)
        return cls(name=name, unit=unit, sent=sent, received=len(ms),
                   seconds=max(0.0, last_receive - first_send),
                   p50_ms=percentile(ms, 50), p95_ms=percentile(ms, 95),
                   p99_ms=percentile(ms, 99), max_ms=ms[-1] if ms else math.nan,
                   target_rate=target_rate, duplicates=duplicates, send_seconds=send_seconds)

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["lost"] = self.lost
        out["throughput_per_s"] = self.throughput
        return {k: (None if isinstance(v, float) and math.isnan(v) else v)
                for k, v in out.items()}


@dataclass
class ScenarioResult:
    key: str  # "raw", "counterpoint", "counterpoint+tracing", "pipeline"
    title: str
    description: str
    phases: list[Phase] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    # Something the product did wrong while being measured (e.g. partial results).
    warnings: list[str] = field(default_factory=list)
    # Relay scenarios: CPU (user+system) of the hop processes per message per hop, in the burst.
    cpu_us_per_msg: float | None = None
    # Single figures with the baseline measured beside them in this run: name -> (this, baseline).
    figures: dict[str, tuple[float, float]] = field(default_factory=dict)
    # Every sequence number the sink saw and how often (relay scenarios; for checks, not JSON).
    arrivals: dict[int, int] = field(default_factory=dict, repr=False)

    def phase(self, name: str) -> Phase | None:
        return next((p for p in self.phases if p.name == name), None)

    @property
    def complete(self) -> bool:
        return all(p.lost == 0 for p in self.phases)

    def to_json(self) -> dict[str, Any]:
        return {"key": self.key, "title": self.title, "description": self.description,
                "phases": [p.to_json() for p in self.phases], "notes": self.notes,
                "cpu_us_per_msg_per_hop": self.cpu_us_per_msg,
                "figures": {k: {"value": _finite(v), "baseline": _finite(b)}
                            for k, (v, b) in self.figures.items()},
                "warnings": self.warnings}


def _finite(value: float) -> float | None:
    return None if math.isnan(value) else value
