"""A sorted list of sorted chunks: O(log N) insertion, removal, rank and positional access.

The layout of the ``sortedcontainers`` package, reduced to what the in-memory repository needs
and written with the standard library only. The values live in a list of sorted chunks (plain
Python lists) of between ``load / 2`` and ``2 * load`` values each, and ``_maxes`` holds the
largest value of each chunk:

* an insertion bisects ``_maxes`` to find its chunk, then inserts into that chunk: a memmove
  of at most ``2 * load`` pointers, where one sorted Python list would move up to N of them;
  a chunk that grows past ``2 * load`` splits in two;
* a removal does the same in reverse; a chunk that shrinks below ``load / 2`` merges with a
  neighbour, so that there are never more than about ``2 * N / load`` chunks;
* rank (:meth:`SortedList.bisect_left`) and positional access (``sorted_list[i]``) add up
  chunk lengths with a Fenwick tree, updated in O(log C) per insertion or removal (C: the
  number of chunks) and rebuilt in O(C) when a split or a merge renumbers the chunks, which
  happens once per ``load / 2`` changes at most.

With C = N / load, bisecting ``_maxes`` costs O(log C), the memmove inside a chunk O(load), and
the tree O(log C): O(log N) in all for a constant load. Values must be totally ordered by
``<`` (ints, strs, tuples of them); equal values are allowed.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right, insort
from collections.abc import Iterable, Iterator
from itertools import chain, islice
from typing import Any, Generic, Protocol, TypeVar, cast

__all__ = ["DEFAULT_LOAD", "Comparable", "SortedList"]

#: Values per chunk, about (chunks hold ``load / 2`` to ``2 * load``): big enough for few chunks,
#: small enough for a quick memmove on insertion.
DEFAULT_LOAD = 1000


class Comparable(Protocol):
    """What a value of a :class:`SortedList` must support: a total order by ``<``."""

    def __lt__(self, other: Any, /) -> bool:
        """True when ``self`` sorts before ``other``."""


T = TypeVar("T", bound=Comparable)

#: A place in the chunks: (chunk number, offset in the chunk). Normalised: the offset is inside
#: the chunk, or the place is ``(number of chunks, 0)``, the end.
_Place = tuple[int, int]


class SortedList(Generic[T]):
    """A list kept in ascending order, with O(log N) add, remove, rank and indexing.

    Iterators (``iter``, :meth:`irange`, :meth:`islice`) read the list as it is while they run:
    the list must not change until they are exhausted or dropped.

    Args:
        values: Initial values (sorted once).
        load: Chunk size to aim at (at least 4).

    """

    __slots__ = ("_len", "_lists", "_load", "_maxes", "_tree", "_tree_ok")

    def __init__(self, values: Iterable[T] = (), *, load: int = DEFAULT_LOAD) -> None:
        if type(load) is not int or load < 4:
            raise ValueError(f"load must be an int of at least 4, not {load!r}")
        self._load = load
        self._lists: list[list[T]] = []
        self._maxes: list[T] = []
        self._len = 0
        # Fenwick tree over the chunk lengths (1-based), valid when _tree_ok.
        self._tree: list[int] = [0]
        self._tree_ok = False
        self.update(values)

    # -- size and iteration ------------------------------------------------------------------

    def __len__(self) -> int:
        return self._len

    def __bool__(self) -> bool:
        return self._len > 0

    def __iter__(self) -> Iterator[T]:
        return chain.from_iterable(self._lists)

    def __reversed__(self) -> Iterator[T]:
        return chain.from_iterable(map(reversed, reversed(self._lists)))

    def __repr__(self) -> str:
        return f"SortedList({list(self)!r})"

    def __contains__(self, value: object) -> bool:
        probe = cast("T", value)  # of another type, it compares unequal or raises TypeError
        maxes = self._maxes
        pos = bisect_left(maxes, probe)
        if pos == len(maxes):
            return False
        chunk = self._lists[pos]
        return not probe < chunk[bisect_left(chunk, probe)]

    def __getitem__(self, index: int) -> T:
        """The value at position ``index`` (negative: from the end), in O(log N).

        Raises:
            IndexError: ``index`` is out of range.
        """
        size = self._len
        if index < 0:
            index += size
        if not 0 <= index < size:
            raise IndexError("SortedList index out of range")
        lists = self._lists
        first = lists[0]
        if index < len(first):
            return first[index]
        last = lists[-1]
        if index >= size - len(last):
            return last[index - size + len(last)]
        pos, offset = self._locate(index)
        return lists[pos][offset]

    # -- changes -----------------------------------------------------------------------------

    def add(self, value: T) -> None:
        """Insert ``value`` (after any equal ones), in O(log N)."""
        maxes = self._maxes
        lists = self._lists
        if not maxes:
            lists.append([value])
            maxes.append(value)
            self._len = 1
            self._tree_ok = False
            return
        pos = bisect_right(maxes, value)
        if pos == len(maxes):
            pos -= 1
            chunk = lists[pos]
            chunk.append(value)
            maxes[pos] = value
        else:
            chunk = lists[pos]
            insort(chunk, value)
        self._len += 1
        if len(chunk) > 2 * self._load:
            self._split(pos)
        elif self._tree_ok:
            self._tree_add(pos, 1)

    def update(self, values: Iterable[T]) -> None:
        """Insert every value of ``values``: one sort of everything, O((N + M) log (N + M))."""
        added = sorted(values)
        if not added:
            return
        merged = [*self, *added] if self._len else added
        if self._len:
            merged.sort()  # two sorted runs: timsort merges them in linear time
        load = self._load
        lists = [merged[i : i + load] for i in range(0, len(merged), load)]
        if len(lists) > 1 and len(lists[-1]) < load // 2:
            tail = lists.pop()
            lists[-1] += tail  # no chunk below load / 2 (at most 1.5 * load here)
        self._lists = lists
        self._maxes = [chunk[-1] for chunk in self._lists]
        self._len = len(merged)
        self._tree_ok = False

    def discard(self, value: T) -> bool:
        """Remove one value equal to ``value``, in O(log N); return False if there is none."""
        maxes = self._maxes
        pos = bisect_left(maxes, value)
        if pos == len(maxes):
            return False
        chunk = self._lists[pos]
        offset = bisect_left(chunk, value)
        if value < chunk[offset]:
            return False
        self._delete(pos, offset)
        return True

    def remove(self, value: T) -> None:
        """Remove one value equal to ``value``, in O(log N).

        Raises:
            ValueError: There is none.
        """
        if not self.discard(value):
            raise ValueError(f"{value!r} is not in the list")

    def clear(self) -> None:
        """Remove every value."""
        self._lists = []
        self._maxes = []
        self._len = 0
        self._tree_ok = False

    # -- rank --------------------------------------------------------------------------------

    def bisect_left(self, value: T) -> int:
        """How many values are smaller than ``value`` (where it would be inserted first)."""
        return self._rank(self._start(value, True))

    def bisect_right(self, value: T) -> int:
        """How many values are smaller than or equal to ``value``."""
        return self._rank(self._start(value, False))

    def index(self, value: T) -> int:
        """The position of the first value equal to ``value``, in O(log N).

        Raises:
            ValueError: There is none.
        """
        pos, offset = self._start(value, True)
        if pos == len(self._lists) or value < self._lists[pos][offset]:
            raise ValueError(f"{value!r} is not in the list")
        return self._rank((pos, offset))

    def count_range(
        self,
        minimum: T | None = None,
        maximum: T | None = None,
        inclusive: tuple[bool, bool] = (True, True),
    ) -> int:
        """How many values :meth:`irange` would yield with the same bounds, in O(log N)."""
        start = self._start(minimum, inclusive[0])
        stop = self._stop(maximum, inclusive[1])
        return max(0, self._rank(stop) - self._rank(start))

    # -- ranges ------------------------------------------------------------------------------

    def irange(
        self,
        minimum: T | None = None,
        maximum: T | None = None,
        inclusive: tuple[bool, bool] = (True, True),
        reverse: bool = False,
    ) -> Iterator[T]:
        """Iterate over the values from ``minimum`` to ``maximum``.

        Finding the start costs O(log N); then each value O(1).

        Args:
            minimum: Lowest value (None: from the first).
            maximum: Highest value (None: to the last).
            inclusive: Whether values equal to ``minimum`` and to ``maximum`` are included.
            reverse: Iterate from the highest down.

        """
        start = self._start(minimum, inclusive[0])
        stop = self._stop(maximum, inclusive[1])
        return self._iterate(start, stop, reverse)

    def islice(self, start: int = 0, stop: int | None = None, reverse: bool = False) -> Iterator[T]:
        """Iterate over the values at positions ``start`` (included) to ``stop`` (excluded).

        Positions are clamped to the list (no negative positions); ``reverse`` iterates over the
        same values from the last down. Finding the start costs O(log N).
        """
        size = self._len
        stop = size if stop is None else min(stop, size)
        start = max(0, start)
        if start >= stop:
            return iter(())
        return self._iterate(self._place(start), self._place(stop), reverse)

    # -- internals ---------------------------------------------------------------------------

    def _place(self, index: int) -> _Place:
        """The place of position ``index`` (0 to len); len is the end."""
        if index >= self._len:
            return (len(self._lists), 0)
        return self._locate(index)

    def _start(self, minimum: T | None, inclusive: bool) -> _Place:
        """The place of the first value at or above (above, if not inclusive) ``minimum``."""
        if minimum is None:
            return (0, 0)
        maxes = self._maxes
        if inclusive:
            pos = bisect_left(maxes, minimum)
            if pos == len(maxes):
                return (pos, 0)
            return (pos, bisect_left(self._lists[pos], minimum))
        pos = bisect_right(maxes, minimum)
        if pos == len(maxes):
            return (pos, 0)
        return (pos, bisect_right(self._lists[pos], minimum))

    def _stop(self, maximum: T | None, inclusive: bool) -> _Place:
        """The place just after the last value at or below (below, if not inclusive) it."""
        if maximum is None:
            return (len(self._lists), 0)
        return self._start(maximum, not inclusive)

    def _iterate(self, start: _Place, stop: _Place, reverse: bool) -> Iterator[T]:
        """The values from place ``start`` (included) to place ``stop`` (excluded).

        Lazy: chunks are reached one after the other, and the partial chunks at the ends are
        skipped into (in C), not copied.
        """
        if start >= stop:
            return iter(())
        lists = self._lists
        (first, head), (last, tail) = start, stop
        if not reverse:
            if first == last:
                return islice(lists[first], head, tail)
            parts: Iterator[Iterable[T]] = chain(
                (islice(lists[first], head, None),),
                map(lists.__getitem__, range(first + 1, last)),
                (islice(lists[last], tail) if tail else (),),
            )
            return chain.from_iterable(parts)
        if first == last:
            size = len(lists[first])
            return islice(reversed(lists[first]), size - tail, size - head)
        size = len(lists[first])
        parts = chain(
            (islice(reversed(lists[last]), len(lists[last]) - tail, None) if tail else (),),
            map(reversed, map(lists.__getitem__, range(last - 1, first, -1))),
            (islice(reversed(lists[first]), size - head),),
        )
        return chain.from_iterable(parts)

    def _split(self, pos: int) -> None:
        """Split chunk ``pos`` (grown past ``2 * load``) in two."""
        chunk = self._lists[pos]
        half = chunk[self._load :]
        del chunk[self._load :]
        self._maxes[pos] = chunk[-1]
        self._lists.insert(pos + 1, half)
        self._maxes.insert(pos + 1, half[-1])
        self._tree_ok = False

    def _delete(self, pos: int, offset: int) -> None:
        """Delete the value at ``offset`` in chunk ``pos``; drop or merge the chunk if small."""
        lists = self._lists
        chunk = lists[pos]
        del chunk[offset]
        self._len -= 1
        if not chunk:
            del lists[pos]
            del self._maxes[pos]
            self._tree_ok = False
            return
        if offset == len(chunk):
            self._maxes[pos] = chunk[-1]
        if len(chunk) < self._load // 2 and len(lists) > 1:
            self._merge(pos)
        elif self._tree_ok:
            self._tree_add(pos, -1)

    def _merge(self, pos: int) -> None:
        """Merge the small chunk ``pos`` into a neighbour (then split that if it is too big)."""
        if pos == 0:
            pos = 1
        lists, maxes = self._lists, self._maxes
        lists[pos - 1].extend(lists[pos])
        maxes[pos - 1] = lists[pos - 1][-1]
        del lists[pos]
        del maxes[pos]
        self._tree_ok = False
        if len(lists[pos - 1]) > 2 * self._load:
            self._split(pos - 1)

    def _build_tree(self) -> None:
        """Rebuild the Fenwick tree of chunk lengths, in O(C)."""
        tree = [0, *map(len, self._lists)]
        size = len(tree)
        for i in range(1, size):
            parent = i + (i & -i)
            if parent < size:
                tree[parent] += tree[i]
        self._tree = tree
        self._tree_ok = True

    def _tree_add(self, pos: int, delta: int) -> None:
        """Add ``delta`` to the length of chunk ``pos`` in the Fenwick tree, in O(log C)."""
        tree = self._tree
        size = len(tree)
        i = pos + 1
        while i < size:
            tree[i] += delta
            i += i & -i

    def _rank(self, place: _Place) -> int:
        """The position of ``place``: the lengths of the chunks before it, plus its offset."""
        pos, offset = place
        if pos == 0:
            return offset
        if pos >= len(self._lists):
            return self._len
        if not self._tree_ok:
            self._build_tree()
        tree = self._tree
        total = offset
        while pos:
            total += tree[pos]
            pos &= pos - 1
        return total

    def _locate(self, index: int) -> _Place:
        """The place of position ``index`` (0 <= index < len), by descending the tree."""
        if not self._tree_ok:
            self._build_tree()
        tree = self._tree
        size = len(tree) - 1
        pos = 0
        step = 1 << (size.bit_length() - 1)
        while step:
            nxt = pos + step
            if nxt <= size and tree[nxt] <= index:
                pos = nxt
                index -= tree[nxt]
            step >>= 1
        return (pos, index)
