"""One empty dict that refuses writes, shared by every holder that has nothing to hold yet.

An empty dict costs 64 B per holder. With ten thousand idle clients (each session's
subscriptions and messages in flight) or a thousand sleeping devices (each one's topic-tree
nodes), that is a good part of what such a holder costs. A holder points at ``NO_ITEMS`` until
its first write, and gives itself a dict of its own just before it:

    if s.inflight is NO_ITEMS:
        s.inflight = {}
    s.inflight[pid] = entry

Reads (``get``, ``in``, ``len``, iteration) work as on any empty dict. A write site that forgot
the check gets a TypeError: one holder's items can never show up in another's. A reference
kept in a local variable goes stale at that first write: read the attribute again after it.
"""

from __future__ import annotations

from typing import Any, NoReturn


class _ReadOnlyDict(dict[Any, Any]):
    __slots__ = ()

    def _refuse(self, *args: object, **kwargs: object) -> NoReturn:
        raise TypeError("NO_ITEMS is shared: give the holder a dict of its own before writing")

    # Being empty, it cannot lose anything to pop/popitem/clear/del: only these could add.
    __setitem__ = _refuse
    setdefault = _refuse
    update = _refuse
    __ior__ = _refuse


NO_ITEMS: dict[Any, Any] = _ReadOnlyDict()
