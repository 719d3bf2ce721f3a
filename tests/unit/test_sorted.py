"""The sorted list of sorted chunks behind the in-memory repository's orders."""

from __future__ import annotations

import bisect
from itertools import pairwise
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cache_service_client._sorted import SortedList


def check(sl: SortedList[Any], expected: list[Any]) -> None:
    """The list's invariants, and that it holds exactly ``expected`` (sorted)."""
    lists, maxes, load = sl._lists, sl._maxes, sl._load
    assert len(lists) == len(maxes)
    assert len(sl) == sum(map(len, lists)) == len(expected)
    assert list(sl) == expected
    assert list(reversed(sl)) == expected[::-1]
    assert all(not b < a for a, b in pairwise(expected))
    for chunk, largest in zip(lists, maxes, strict=True):
        assert chunk
        assert chunk[-1] == largest
        assert len(chunk) <= 2 * load
        if len(lists) > 1:
            assert len(chunk) >= load // 2
    if sl._tree_ok:
        tree = sl._tree
        sl._build_tree()
        assert tree == sl._tree


def test_empty() -> None:
    sl: SortedList[int] = SortedList()
    check(sl, [])
    assert not sl
    assert 3 not in sl
    assert sl.bisect_left(3) == sl.bisect_right(3) == 0
    assert list(sl.irange(1, 5)) == list(sl.irange(reverse=True)) == []
    assert list(sl.islice(0, 10)) == []
    assert sl.count_range(1, 5) == 0
    assert sl.discard(1) is False
    with pytest.raises(IndexError):
        sl[0]
    with pytest.raises(ValueError, match="not in the list"):
        sl.remove(1)
    with pytest.raises(ValueError, match="not in the list"):
        sl.index(1)


def test_load_is_checked() -> None:
    with pytest.raises(ValueError, match="load"):
        SortedList(load=3)


def test_splits_merges_and_positions() -> None:
    sl = SortedList(range(0, 200, 2), load=4)
    check(sl, list(range(0, 200, 2)))
    for value in range(1, 200, 2):
        sl.add(value)
    check(sl, list(range(200)))
    assert [sl[i] for i in range(200)] == list(range(200))
    assert [sl[-i] for i in range(1, 201)] == list(range(199, -1, -1))
    assert [sl.index(v) for v in range(200)] == list(range(200))
    for value in range(0, 200, 3):
        sl.remove(value)
    rest = [v for v in range(200) if v % 3]
    check(sl, rest)
    assert [sl[i] for i in range(len(rest))] == rest
    assert sl.bisect_left(100) == bisect.bisect_left(rest, 100)
    assert sl.bisect_right(100) == bisect.bisect_right(rest, 100)
    sl.clear()
    check(sl, [])


def test_ranges_and_tuples() -> None:
    sl = SortedList([(s, i) for s in range(5) for i in "abc"], load=4)
    assert list(sl.irange((1, ""), (3, ""), inclusive=(True, False))) == [
        (1, "a"),
        (1, "b"),
        (1, "c"),
        (2, "a"),
        (2, "b"),
        (2, "c"),
    ]
    assert list(sl.irange((1, "b"), (2, "a"), inclusive=(False, True), reverse=True)) == [
        (2, "a"),
        (1, "c"),
    ]
    assert sl.count_range((1, "b"), (2, "a"), inclusive=(False, True)) == 2
    assert sl.count_range((3, ""), (1, "")) == 0
    assert list(sl.islice(2, 5)) == [(0, "c"), (1, "a"), (1, "b")]
    assert list(sl.islice(2, 5, reverse=True)) == [(1, "b"), (1, "a"), (0, "c")]
    assert list(sl.islice(14, 99)) == [(4, "c")]
    assert (2, "b") in sl
    assert (2, "d") not in sl


def test_duplicates() -> None:
    sl = SortedList([3, 1, 3, 2, 3], load=4)
    assert sl.bisect_left(3) == 2
    assert sl.bisect_right(3) == 5
    assert sl.index(3) == 2
    sl.remove(3)
    check(sl, [1, 2, 3, 3])


operations = st.lists(
    st.tuples(st.sampled_from(["add", "discard", "update"]), st.integers(-50, 50)), max_size=300
)


@settings(max_examples=200, deadline=None)
@given(
    initial=st.lists(st.integers(-50, 50), max_size=60),
    ops=operations,
    load=st.sampled_from([4, 5, 8, 1000]),
    probes=st.lists(
        st.tuples(
            st.none() | st.integers(-60, 60),
            st.none() | st.integers(-60, 60),
            st.booleans(),
            st.booleans(),
            st.booleans(),
        ),
        min_size=1,
        max_size=5,
    ),
)
def test_behaves_like_a_sorted_python_list(
    initial: list[int],
    ops: list[tuple[str, int]],
    load: int,
    probes: list[tuple[int | None, int | None, bool, bool, bool]],
) -> None:
    sl = SortedList(initial, load=load)
    model = sorted(initial)
    for op, value in ops:
        if op == "add":
            sl.add(value)
            bisect.insort(model, value)
        elif op == "discard":
            present = value in model
            assert sl.discard(value) is present
            if present:
                model.remove(value)
        else:
            extra = [value, value + 7, value - 3]
            sl.update(extra)
            model = sorted(model + extra)
        # Ranks and positions on a list that has just changed (the tree updated in place).
        assert sl.bisect_left(value) == bisect.bisect_left(model, value)
        if model:
            middle = len(model) // 2
            assert sl[middle] == model[middle]
    check(sl, model)
    for i, value in enumerate(model):
        assert sl[i] == value
        assert sl[i - len(model)] == value
    for value in range(-60, 61, 7):
        assert sl.bisect_left(value) == bisect.bisect_left(model, value)
        assert sl.bisect_right(value) == bisect.bisect_right(model, value)
        assert (value in sl) == (value in model)
        if value in model:
            assert sl.index(value) == model.index(value)
    for low, high, low_in, high_in, reverse in probes:
        expected = [
            v
            for v in model
            if (low is None or v > low or (low_in and v == low))
            and (high is None or v < high or (high_in and v == high))
        ]
        got = list(sl.irange(low, high, inclusive=(low_in, high_in), reverse=reverse))
        assert got == (expected[::-1] if reverse else expected)
        assert sl.count_range(low, high, inclusive=(low_in, high_in)) == len(expected)
        start, stop = abs(low or 0), None if high is None else abs(high)
        part = model[start:stop]
        assert list(sl.islice(start, stop, reverse=reverse)) == (part[::-1] if reverse else part)
