"""The bench's command line and the peer scenario's virtualenv guard (no broker needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.bench.peer import ensure_venv
from tests.bench.reader import BenchError
from tests.bench.run import build_parser, parse_phases, resolve
from tests.bench.status import NullStatus


def test_peer_phases_parse_to_concurrency_and_count() -> None:
    assert parse_phases("1:30, 64:400") == [(1, 30), (64, 400)]


@pytest.mark.parametrize("text", ["64", "a:3", "0:10", "4:0", "4:-1", ""])
def test_bad_peer_phases_are_refused_naming_the_part(text: str) -> None:
    with pytest.raises(ValueError, match=r"CONCURRENCY:REQUESTS|positive"):
        parse_phases(text)


def test_resolve_names_the_bad_option() -> None:
    args = build_parser().parse_args(["--peer-phases", "64"])
    with pytest.raises(SystemExit, match="--peer-phases: '64' is not CONCURRENCY:REQUESTS"):
        resolve(args)


def test_the_peer_runs_only_when_asked_for() -> None:
    assert "peer" not in resolve(build_parser().parse_args([]))["only"]
    sizes = resolve(build_parser().parse_args(["--only", "peer", "--quick"]))
    assert sizes["only"] == ["peer"] and sizes["peer_phases"] == [(1, 10), (64, 128)]


async def test_a_folder_the_bench_did_not_make_is_left_alone(tmp_path: Path) -> None:
    venv = tmp_path / "calfkit-venv"
    venv.mkdir()
    mine = venv / "notes.txt"
    mine.write_text("someone else's")
    with pytest.raises(BenchError, match="was not made by this bench"):
        await ensure_venv(venv, NullStatus())
    assert [p.name for p in venv.iterdir()] == ["notes.txt"]
    assert mine.read_text() == "someone else's"
