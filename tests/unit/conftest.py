"""Fixtures shared by the unit tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from counterpoint_demo.store import BusinessStore


@pytest.fixture
def store(tmp_path: Path) -> Iterator[BusinessStore]:
    """The seeded business database, private to one test."""
    with BusinessStore.open(tmp_path / "b.db") as opened:
        yield opened
