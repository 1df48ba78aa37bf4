"""Where a reader of a table's new rows stands, when ids do not become visible in id order.

On PostgreSQL a row's id comes from a sequence when it is inserted, but transactions commit in any order: id 11
may be visible before id 10. A reader that kept only "the highest id seen" would move past 10 and never see it.
:class:`IdCursor` also remembers the ids below its highest one that it has not seen ("holes") and the reader
asks for them again on each read, until they turn up or are older than ``HOLE_SECONDS``: the id of a rolled-back
insert never turns up, nor does a row deleted before it was read. At most ``MAX_HOLES`` are kept (the oldest go
first), so that a burst of rolled-back inserts cannot grow a read without bound.

Pure data, no database: ``crm_store.repositories.console.read_feed`` runs the queries.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

HOLE_SECONDS = 60.0
MAX_HOLES = 1000


@dataclass(frozen=True)
class IdCursor:
    """``last``: the highest id seen (None: not started, the first read only sets it); ``holes``: id → when it
    was first missed (seconds on the reader's monotonic clock), oldest first. Immutable: a read builds the next
    cursor with :meth:`advanced`, and its caller keeps the old one if anything in the read fails."""

    last: int | None = None
    holes: dict[int, float] = field(default_factory=dict)

    @property
    def started(self) -> bool:
        return self.last is not None

    @classmethod
    def at(cls, top: int | None) -> IdCursor:
        """A cursor after the current highest id ``top`` (None: an empty table): older rows are not news."""
        return cls(last=top or 0)

    def pending(self, now: float) -> list[int]:
        """The holes still worth asking for at ``now`` (missed for at most ``HOLE_SECONDS``), ascending."""
        return sorted(i for i, since in self.holes.items() if now - since <= HOLE_SECONDS)

    def advanced(self, seen: Iterable[int], now: float) -> IdCursor:
        """The cursor after a read (at ``now``, monotonic seconds) that found the ids ``seen``: new ones above
        ``last`` and holes that turned up.

        Ids between ``last`` and the highest seen that were not seen become holes stamped ``now``; holes seen
        now, or missed for longer than ``HOLE_SECONDS``, are forgotten.
        """
        found = set(seen)
        last = self.last or 0
        top = max(found | {last})
        holes = {i: since for i, since in self.holes.items() if i not in found and now - since <= HOLE_SECONDS}
        missing: list[int] = []
        candidate = top - 1
        while candidate > last and len(missing) < MAX_HOLES:  # newest first: those are the likeliest to turn up
            if candidate not in found:
                missing.append(candidate)
            candidate -= 1
        for hole in reversed(missing):
            holes[hole] = now
        if len(holes) > MAX_HOLES:
            holes = dict(list(holes.items())[-MAX_HOLES:])
        return IdCursor(last=top, holes=holes)
