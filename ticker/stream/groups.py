"""The parked streams, indexed by symbol, so that a broadcast round costs what it delivers.

Streams that ask for the same symbols with the same framing share a
:class:`Group`: one payload is built for all of them.  Each symbol names the
groups that want it, so a round reads the hub's stretch after ``position`` once
and gives each event only to the groups of its symbol (:meth:`Groups.route`):
a round costs the events it delivers, not the streams parked nor how many
different watchlists they hold.

Invariant: a grouped stream has been sent every event of its symbols with
``id <= max(stream.cursor, position)``.  Its own ``cursor`` is not written
while it sits idle: moving ``position`` at the end of a round moves every
grouped stream at once, and only the streams of a group that got something are
written to (their cursor is set to the stretch's end just before their send).
:meth:`Groups.remove` and :meth:`Groups.settle` write the true cursor back.
During a round ``position`` is still where the stretch starts, so a stream taken
out mid-round gets the stretch's end if its send was made, else the stretch's
start: nothing is sent twice or skipped either way.

A stream parked at another cursor than ``position`` (it caught up with a hub
head that the broadcaster has not reached yet) waits in ``joining`` with its
own cursor, and so does every stream that parks while a round is being sent
(the broadcaster lets other greenlets run between groups).  No stretch reaches
past the lowest joining cursor above ``position`` (:meth:`Groups.next_stop`),
so the round that starts there admits it (:meth:`Groups.admit`); one below
``position`` (the broadcaster's position is from an earlier epoch) is handed
back to catch up alone.

Pure: no gevent, no sockets; the broadcaster does the sending.
"""

from __future__ import annotations

from typing import Generic, Protocol, TypeVar

from ticker.hub import Stretch


class Member(Protocol):
    """What the index needs of a parked stream."""

    cursor: int
    wanted: frozenset[str]


M = TypeVar("M", bound=Member)


class Group(Generic[M]):
    """Parked streams with the same symbols and framing: they get the same bytes."""

    __slots__ = ("chunked", "members", "wanted")

    def __init__(self, wanted: frozenset[str], chunked: bool) -> None:
        self.wanted = wanted
        self.chunked = chunked
        self.members: set[M] = set()


class Groups(Generic[M]):
    """The parked streams: grouped at ``position``, or joining at a cursor of their own."""

    def __init__(self, position: int = 0) -> None:
        self.position = position
        self.joining: dict[M, bool] = {}  # a stream waiting for position → its framing
        self.routing = False  # a round is being sent: a stream that parks meanwhile joins
        self._groups: dict[tuple[frozenset[str], bool], Group[M]] = {}
        self._by_symbol: dict[str, set[Group[M]]] = {}
        self._where: dict[M, Group[M]] = {}

    def __len__(self) -> int:
        return len(self._where) + len(self.joining)

    def members(self) -> list[M]:
        """Return every parked stream, grouped or joining."""
        return [*self._where, *self.joining]

    def groups(self) -> list[Group[M]]:
        """Return the groups that have streams."""
        return list(self._groups.values())

    def park(self, member: M, chunked: bool) -> None:
        """Park a caught-up stream: in its group when its cursor is ``position``, else joining.

        While a round is being sent (``routing``), every stream that parks joins:
        the round's groups are already chosen, and ``position`` is about to move.
        """
        if self.routing or member.cursor != self.position:
            self.joining[member] = chunked
            return
        self._group(member, chunked)

    def remove(self, member: M) -> bool:
        """Take a stream out, with its true cursor written back; False if it was not parked."""
        if self.joining.pop(member, None) is not None:
            return True
        group = self._where.pop(member, None)
        if group is None:
            return False
        member.cursor = max(member.cursor, self.position)
        group.members.discard(member)
        if not group.members:
            del self._groups[(group.wanted, group.chunked)]
            for symbol in group.wanted:
                wanting = self._by_symbol[symbol]
                wanting.discard(group)
                if not wanting:
                    del self._by_symbol[symbol]
        return True

    def settle(self, member: M) -> None:
        """Write a grouped stream's true cursor (for a keepalive that names it)."""
        if member in self._where:
            member.cursor = max(member.cursor, self.position)

    def admit(self) -> list[M]:
        """Group the joining streams whose cursor is ``position``; return those below it.

        The returned streams are no longer parked: the caller hands them back.
        """
        stale: list[M] = []
        for member, chunked in list(self.joining.items()):
            if member.cursor > self.position:
                continue
            del self.joining[member]
            if member.cursor < self.position:
                stale.append(member)
            else:
                self._group(member, chunked)
        return stale

    def next_stop(self) -> int | None:
        """Return the lowest joining cursor above ``position``: no stretch may read past it."""
        above = [m.cursor for m in self.joining if m.cursor > self.position]
        return min(above) if above else None

    def route(self, stretch: Stretch) -> dict[Group[M], int | list[int]]:
        """Give each group that wants any event of ``stretch`` the indexes of those, in id order.

        Groups that want none are left out: a round costs what it delivers.  A
        group with one event (most of them, with many watchlists) gets its
        index as an int: a list for each would be thousands of containers alive
        through the round, enough to set off the garbage collector's full
        collections, which stall every stream.
        """
        found: dict[Group[M], int | list[int]] = {}
        by_symbol = self._by_symbol
        for i, symbol in enumerate(stretch.symbols):
            wanting = by_symbol.get(symbol)
            if wanting is None:
                continue
            for group in wanting:
                hits = found.get(group)
                if hits is None:
                    found[group] = i
                elif isinstance(hits, int):
                    found[group] = [hits, i]
                else:
                    hits.append(i)
        return found

    def _group(self, member: M, chunked: bool) -> None:
        key = (member.wanted, chunked)
        group = self._groups.get(key)
        if group is None:
            group = self._groups[key] = Group(member.wanted, chunked)
            for symbol in member.wanted:
                self._by_symbol.setdefault(symbol, set()).add(group)
        group.members.add(member)
        self._where[member] = group
