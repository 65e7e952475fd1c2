"""Ordered commits: out-of-order completion never commits past an unfinished offset."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from counterpoint.bus.commits import PartitionOffsets


def test_commit_waits_for_the_oldest_unfinished_offset() -> None:
    po = PartitionOffsets()
    for offset in (10, 11, 12, 13):
        po.track(offset)
    po.done(12)
    po.done(13)
    assert po.committable() is None  # 10 and 11 are still running
    po.done(10)
    assert po.committable() == 11  # everything below 11 is done; 11 is not
    po.committed(11)
    assert po.committable() is None  # nothing new since the commit
    po.done(11)
    assert po.committable() == 14
    assert po.unfinished == 0


def test_done_for_unknown_or_repeated_offsets_is_harmless() -> None:
    po = PartitionOffsets()
    po.track(5)
    po.done(99)  # from a revoked generation
    po.done(5)
    po.done(5)
    assert po.committable() == 6


def test_tracking_out_of_order_is_a_bug() -> None:
    po = PartitionOffsets()
    po.track(5)
    with pytest.raises(ValueError, match="out of order"):
        po.track(4)


@given(st.data())
def test_random_completion_orders_never_commit_past_an_unfinished_offset(
        data: st.DataObject) -> None:
    start = data.draw(st.integers(0, 1000))
    count = data.draw(st.integers(1, 60))
    offsets = list(range(start, start + count))
    order = data.draw(st.permutations(offsets))
    held = set(data.draw(st.lists(st.sampled_from(offsets), max_size=5)))
    po = PartitionOffsets()
    for offset in offsets:
        po.track(offset)
    finished: set[int] = set()
    committed = start
    for offset in order:
        if offset in held:
            continue  # a hold that is never released
        po.done(offset)
        finished.add(offset)
        position = po.committable()
        if position is not None:
            assert position > committed  # commits only move forward
            # Every offset below the committed position is finished.
            assert set(range(start, position)) <= finished
            po.committed(position)
            committed = position
    unfinished = sorted(set(offsets) - finished)
    expected = unfinished[0] if unfinished else start + count
    assert committed == expected or (committed == start and expected == start)
