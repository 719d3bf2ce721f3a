"""Tests of the exact port of Redis' ``stringmatchlen`` glob matcher."""

from __future__ import annotations

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from cache_service_client._glob import compile_glob, escape_glob, glob_match, literal_prefix

# (pattern, text, expected): every row is also checked against the real server below.
EDGE_CASES: list[tuple[str, str, bool]] = [
    # Plain literals and the empty string.
    ("", "", True),
    ("", "a", False),
    ("abc", "abc", True),
    ("abc", "abcd", False),
    ("abc", "ab", False),
    # A non-empty pattern never matches the empty string, not even "**" (SCAN/KEYS special-case
    # exactly "*" before calling stringmatchlen, so it is not checked against the server).
    ("**", "", False),
    ("?", "", False),
    ("**", "a", True),
    ("a*", "a", True),
    ("a***", "a", True),
    ("*a", "a", True),
    ("*a", "ba", True),
    ("*a", "ab", False),
    ("a*b*c", "abc", True),
    ("a*b*c", "ab", False),
    ("a*b*c", "aXbYbZc", True),
    ("*ab*ab", "abab", True),
    ("*ab*ab", "abXab", True),
    ("*ab*ab", "aab", False),
    # "?" matches exactly one byte: "é" is two bytes, "中" three, "😀" four.
    ("?", "a", True),
    ("?", "é", False),
    ("??", "é", True),
    ("???", "中", True),
    ("??", "中", False),
    ("????", "😀", True),
    ("a?c", "abc", True),
    ("a?c", "aéc", False),
    ("a??c", "aéc", True),
    # Classes, negation, ranges, reversed ranges.
    ("[abc]", "b", True),
    ("[abc]", "d", False),
    ("[^a]", "a", False),
    ("[^a]", "b", True),
    ("[a-c]x", "bx", True),
    ("[z-a]", "m", True),
    ("[z-a]", "A", False),
    ("[^a-c]", "d", True),
    ("[^a-c]", "b", False),
    ("[ab-]", "-", False),  # "b-]" is a range (0x5d..0x62) and the class is unterminated
    ("[ab-]", "^", True),
    ("[ab-]]", "-", False),
    ("[ab-]]", "]", True),
    ("[-a]", "-", True),
    ("[a-]", "^", True),  # unterminated: the range a-] is ]..a (0x5d..0x61)
    ("[a-]", "-", False),
    ("[a-", "-", True),  # unterminated: literal a and -
    ("[a-", "a", True),
    # The example of docs/repositories.md: the range *-] takes the "]", so "b" joins the class,
    # which runs to the end: "a", then one byte from "*" to "]", or "b".
    ("a[*-]b", "ab", True),
    ("a[*-]b", "a-", True),
    ("a[*-]b", "a]", True),
    ("a[*-]b", "aA", True),
    ("a[*-]b", "a*b", False),
    ("a[*-]b", "a-b", False),
    ("a[*-]b", "ac", False),
    ("[é]", "é", False),  # a class matches one byte; the class closes, "é" needs two
    ("[^é]", "a", True),
    ("[^é]", "é", False),
    ("[é]?", "é", True),
    # C char is signed: 0xc3 (first byte of "é") is -61, so [a-é] is the range -61..97 plus
    # a literal 0xa9 byte.
    ("[a-é]?", "é", True),
    ("[a-é]", "Z", True),
    ("[a-é]", "a", True),
    ("[a-é]", "b", False),
    ("[a-é]", "\x7f", False),
    ("[\x01-é]?", "é", True),  # 0x01..-61 swapped: -61..1, which holds 0xc3
    ("[\x01-é]", "a", False),
    ("[é-a]?", "é", True),
    ("[\x00-\x7f]", "\x7f", True),
    ("[\x00-\x7f]?", "é", False),
    ("[^\x00-\x7f]?", "é", True),
    # Escapes inside and outside classes; a trailing lone backslash is a literal backslash.
    ("\\*", "*", True),
    ("\\*", "a", False),
    ("\\?", "?", True),
    ("\\[a]", "[a]", True),
    ("\\a", "a", True),
    ("\\", "\\", True),
    ("a\\", "a\\", True),
    ("a\\", "a", False),
    ("\\\\", "\\", True),
    ("[\\]]", "]", True),
    ("[\\-a]", "-", True),
    ("[\\-a]", "b", False),
    ("[a\\", "\\", True),
    ("[\\", "\\", True),
    ("[a-\\]]", "]", False),  # the range a-\ then a literal "]"
    ("[a-\\]]", "\\]", True),
    ("[a-\\]]", "_]", True),
    # Unterminated classes consume the rest of the pattern (including any "*").
    ("[", "[", False),
    ("[", "a", False),
    ("[^", "x", True),
    ("[^", "^", True),
    ("[abc", "b", True),
    ("[abc", "bc", False),
    ("[a*", "*", True),
    ("[a*", "ab", False),
    ("x[a*", "x*", True),
    # "]" right after "[" closes an empty class, which matches nothing; "[^]" matches any byte.
    ("[]", "]", False),
    ("[]a]", "a]", False),
    ("[^]", "a", True),
    ("[^]a]", "ba]", True),
    ("[^]a]", "ba", False),
    # Special characters where they are plain literals.
    ("]", "]", True),
    ("^", "^", True),
    ("-", "-", True),
    ("a]b", "a]b", True),
    # Non-ASCII literals are compared byte by byte.
    ("中*", "中文", True),
    ("*文", "中文", True),
    ("*é*", "café!", True),
    ("\\é", "é", True),
    ("[中]??", "中", True),
    # NUL bytes are ordinary bytes, and the one past the end of the pattern stops "*" runs.
    ("a\x00*", "a\x00b", True),
    ("[\x00]", "\x00", True),
]


@pytest.mark.parametrize(("pattern", "text", "expected"), EDGE_CASES)
def test_edge_cases(pattern: str, text: str, expected: bool) -> None:
    assert glob_match(pattern, text) is expected
    assert compile_glob(pattern)(text) is expected


def test_star_alone_does_not_match_the_empty_string() -> None:
    # stringmatchlen("*", "") is 0; KEYS/SCAN/HSCAN short-circuit exactly "*" and list everything.
    assert glob_match("*", "") is False
    assert compile_glob("*")("") is False
    assert compile_glob("*")("x") is True


@pytest.mark.parametrize("stars", [1, 2, 999, 1000])
def test_nesting_limit_allows_1000_stars(stars: int) -> None:
    text = "a" * stars
    for pattern in ("*a" * stars, "*a" * stars + "*"):
        assert glob_match(pattern, text) is True
        assert compile_glob(pattern)(text) is True


@pytest.mark.parametrize("stars", [1001, 1500])
def test_nesting_limit_rejects_more_than_1000_stars(stars: int) -> None:
    text = "a" * stars
    for pattern in ("*a" * stars, "*a" * stars + "*"):
        assert glob_match(pattern, text) is False
        assert compile_glob(pattern)(text) is False


def test_nesting_limit_does_not_count_a_trailing_star() -> None:
    # A final "*" run matches at once, without a nested call.
    assert glob_match("a*" * 1001, "a" * 1001) is True
    assert compile_glob("a*" * 1001)("a" * 1001) is True
    assert glob_match("a*" * 1002, "a" * 1002) is False
    assert compile_glob("a*" * 1002)("a" * 1002) is False


def test_pathological_patterns_are_fast() -> None:
    # Redis' skipLongerMatches keeps these linear; so do both matchers (no exponential search).
    text = "a" * 3000
    pattern = "*a" * 60 + "b"
    assert glob_match(pattern, text) is False
    assert compile_glob(pattern)(text) is False
    assert compile_glob(pattern + "*")(text + "b") is True


def test_literal_prefix_examples() -> None:
    assert literal_prefix("") == ""
    assert literal_prefix("abc") == "abc"
    assert literal_prefix("dev:*") == "dev:"
    assert literal_prefix("dev:?x") == "dev:"
    assert literal_prefix("dev:[ab]") == "dev:"
    assert literal_prefix("d\\*v\\[1\\]*") == "d*v[1]"
    assert literal_prefix("a]b-^*") == "a]b-^"
    assert literal_prefix("a\\") == "a\\"
    assert literal_prefix("中\\é*") == "中é"
    assert literal_prefix("*abc") == ""


def test_escape_glob_examples() -> None:
    assert escape_glob("t[1]") == "t\\[1\\]"
    assert escape_glob("a*b?c\\d") == "a\\*b\\?c\\\\d"
    assert escape_glob("plain-^é") == "plain-^é"
    assert glob_match(escape_glob("t[1]") + "*", "t[1]:x") is True
    assert glob_match(escape_glob("t[1]") + "*", "t1:x") is False
    assert glob_match("t[1]*", "t1:x") is True  # what an unescaped prefix would do


# --- Property-based tests ----------------------------------------------------------------------

TEXT_ALPHABET = "abc-^][*?\\é中Z~\x7f😀"
PATTERN_ALPHABET = TEXT_ALPHABET + "**??[[]\\"
PATTERN_PIECES = [
    "*",
    "**",
    "?",
    "??",
    "[abc]",
    "[^a]",
    "[a-c]",
    "[c-a]",
    "[a-é]",
    "[é-a]",
    "[\\]a]",
    "[]",
    "[^]",
    "[",
    "[^",
    "[a-",
    "\\",
    "\\*",
    "\\?",
    "\\[",
    "]",
    "-",
    "^",
]

texts_strategy = st.text(alphabet=TEXT_ALPHABET, max_size=6)
random_patterns = st.text(alphabet=PATTERN_ALPHABET, max_size=10)


@st.composite
def char_pattern(draw: st.DrawFn, char: str) -> str:
    """A pattern piece for one character of a text: usually one that matches it."""
    other = draw(st.sampled_from(TEXT_ALPHABET))
    low, high = (char, other) if draw(st.booleans()) else (other, char)
    # A class takes only the first byte of a multi-byte character; "?" takes the others.
    rest = "?" * (len(char.encode()) - 1) if draw(st.booleans()) else ""
    return draw(
        st.sampled_from(
            [
                char,
                char,
                escape_glob(char),
                "\\" + char,
                "?" * len(char.encode()),
                "?",
                "*",
                "*" + char,
                char + "*",
                f"[{low}-{high}]{rest}",
                f"[{low}-{high}]{rest}",
                f"[{low}-{high}]{rest}",
                f"[{low}{high}]{rest}",
                f"[^{other}]{rest}",
            ]
        )
    )


@st.composite
def pattern_from(draw: st.DrawFn, text: str) -> str:
    """A pattern built from ``text``, so that it often matches ``text`` or nearly does.

    Each character becomes a piece that (mostly) matches it -- itself, escaped, "?", "*", a
    class or a range either way round (signed bytes, multi-byte characters) -- then a few random
    pieces are inserted or removed.
    """
    pieces = [draw(char_pattern(char)) for char in text]
    for _ in range(draw(st.integers(min_value=0, max_value=2))):
        index = draw(st.integers(min_value=0, max_value=len(pieces)))
        if index < len(pieces) and draw(st.booleans()):
            del pieces[index]
        else:
            pieces.insert(index, draw(st.sampled_from(PATTERN_PIECES)))
    return "".join(pieces)


@st.composite
def texts_and_pattern(draw: st.DrawFn) -> tuple[set[str], str]:
    """A batch of texts and a pattern, either random or derived from one of the texts."""
    texts = draw(st.sets(texts_strategy, min_size=1, max_size=25))
    if draw(st.integers(min_value=0, max_value=3)) == 0:
        pattern = draw(random_patterns)
    else:
        pattern = draw(pattern_from(draw(st.sampled_from(sorted(texts)))))
    return texts, pattern


@st.composite
def pattern_and_text(draw: st.DrawFn) -> tuple[str, str]:
    """One text and a pattern that is random or derived from the text."""
    text = draw(texts_strategy)
    pattern = draw(random_patterns | pattern_from(text))
    return pattern, text


@settings(max_examples=3000, deadline=None)
@given(case=pattern_and_text())
def test_compiled_matcher_agrees_with_interpreter(case: tuple[str, str]) -> None:
    pattern, text = case
    assert compile_glob(pattern)(text) == glob_match(pattern, text)


@settings(max_examples=1000, deadline=None)
@given(case=pattern_and_text())
def test_literal_prefix_is_sound(case: tuple[str, str]) -> None:
    pattern, text = case
    prefix = literal_prefix(pattern)
    assert pattern.replace("\\", "").startswith(prefix.replace("\\", ""))
    if glob_match(pattern, text):
        assert text.startswith(prefix)


@settings(max_examples=1000, deadline=None)
@given(prefix=texts_strategy, rest=texts_strategy, other=texts_strategy)
def test_escaped_text_matches_only_itself(prefix: str, rest: str, other: str) -> None:
    escaped = escape_glob(prefix)
    assert glob_match(escaped, prefix)
    assert glob_match(escaped, other) == (other == prefix)
    assert compile_glob(escaped)(other) == (other == prefix)
    assert literal_prefix(escaped) == prefix
    if prefix + rest:
        assert glob_match(escaped + "*", prefix + rest)
        assert compile_glob(escaped + "*")(prefix + rest)
    if glob_match(escaped + "*", other):
        assert other.startswith(prefix)


@settings(max_examples=1000, deadline=None)
@given(prefix=texts_strategy, pattern=random_patterns, rest=texts_strategy)
def test_escaped_prefix_composes_with_a_pattern(prefix: str, pattern: str, rest: str) -> None:
    # With a non-empty prefix, "prefix + pattern" matches "prefix + rest" exactly when "pattern"
    # matches "rest" -- except that an empty rest is only matched by a pattern of "*" runs.
    assume(prefix)
    expected = glob_match(pattern, rest) if rest else pattern.strip("*") == ""
    assert glob_match(escape_glob(prefix) + pattern, prefix + rest) == expected
