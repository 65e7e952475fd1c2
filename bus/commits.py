"""Which offset of a partition is safe to commit when records finish out of order.

Records of one partition are handled concurrently (different keys) and may finish in any
order, and some are held open on purpose (a join waiting for its other inputs). The committed
offset may only move past a record once it and every record before it are done: otherwise a
crash would skip the unfinished one. This is the parallel-consumer approach: commit the
contiguous prefix of finished offsets.
"""

from __future__ import annotations

from collections import deque


class PartitionOffsets:
    """Fetched-but-unfinished offsets of one partition, in fetch (= offset) order."""

    def __init__(self) -> None:
        self._open: deque[int] = deque()
        self._done: set[int] = set()
        self._next: int | None = None  # the offset to commit: everything below it is done
        self._committed: int | None = None

    def track(self, offset: int) -> None:
        if self._open and offset <= self._open[-1]:
            raise ValueError(f"offset {offset} tracked after {self._open[-1]}: out of order")
        self._open.append(offset)

    def done(self, offset: int) -> None:
        if offset not in self._open or offset in self._done:
            return  # unknown (a revoked generation) or already done: both harmless
        self._done.add(offset)
        while self._open and self._open[0] in self._done:
            first = self._open.popleft()
            self._done.discard(first)
            self._next = first + 1

    @property
    def unfinished(self) -> int:
        return len(self._open) - len(self._done)

    @property
    def oldest_open(self) -> int | None:
        return self._open[0] if self._open else None

    def committable(self) -> int | None:
        """The offset to commit now, or None when nothing new finished since the last commit."""
        if self._next is None or self._next == self._committed:
            return None
        return self._next

    def committed(self, offset: int) -> None:
        self._committed = offset
