"""`make bench`'s relay scenarios at tiny sizes: every message arrives once, figures are numbers.

Behaviour only, never a time threshold: speed is what `make bench` reports, not what tests
assert.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from tests.bench.relay import RelayKind, run_relay
from tests.bench.status import NullStatus

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

MESSAGES = 50
WARMUP = 8


@pytest.mark.parametrize(("kind", "metrics"), [("raw", False), ("counterpoint", False),
                                               ("counterpoint", True)])
async def test_relay_delivers_every_message_exactly_once(bootstrap: str, tmp_path: Path,
                                                         kind: RelayKind, metrics: bool) -> None:
    result = await run_relay(kind, bootstrap, messages=MESSAGES, rate=200, duration=0,
                             workdir=tmp_path, status=NullStatus(), warmup=WARMUP,
                             metrics=metrics)

    # warm-up and burst, each sequence number once at the sink: nothing lost, nothing doubled
    assert result.arrivals == dict.fromkeys(range(WARMUP + MESSAGES), 1)
    assert [p.name for p in result.phases] == ["burst"]  # duration 0: no paced phase
    (burst,) = result.phases
    assert burst.sent == burst.received == MESSAGES
    assert burst.lost == 0 and burst.duplicates == 0
    figures = [burst.seconds, burst.throughput, burst.p50_ms, burst.p95_ms, burst.p99_ms,
               burst.max_ms]
    assert all(math.isfinite(x) and x > 0 for x in figures), figures
    assert burst.p50_ms <= burst.p95_ms <= burst.p99_ms <= burst.max_ms
    assert result.complete
