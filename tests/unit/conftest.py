"""Fixtures shared by the unit tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from opentelemetry import metrics
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from counterpoint_demo.store import BusinessStore
from tests.support.dockerfile import InstalledImage, build_image


@pytest.fixture
def store(tmp_path: Path) -> Iterator[BusinessStore]:
    """The seeded business database, private to one test."""
    with BusinessStore.open(tmp_path / "demo-business.db") as opened:
        yield opened


@pytest.fixture(scope="session")
def image(tmp_path_factory: pytest.TempPathFactory) -> Callable[[Path, Path], InstalledImage]:
    """Installs a build context the way its Dockerfile does (no Docker), once per session."""
    built: dict[tuple[Path, Path], InstalledImage] = {}

    def build(context: Path, dockerfile: Path) -> InstalledImage:
        key = (context.resolve(), dockerfile.resolve())
        if key not in built:
            built[key] = build_image(context, dockerfile, tmp_path_factory.mktemp("image"))
        return built[key]

    return build


@pytest.fixture(scope="session")
def metrics_reader() -> InMemoryMetricReader:
    """This test process's meter provider, read in memory (installed once: OpenTelemetry
    allows one global provider per process). Values are cumulative over the session, so
    tests compare before and after."""
    reader = InMemoryMetricReader()
    metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
    return reader
