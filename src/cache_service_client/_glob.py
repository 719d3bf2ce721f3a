"""Redis glob patterns, matched exactly as Redis matches them.

Redis filters ``KEYS``, ``SCAN ... MATCH`` (and ``HSCAN``/``SSCAN``/``ZSCAN``) with the C function
``stringmatchlen`` of ``src/util.c``. Every backend of this library, the in-memory fake included,
must give the very same answer, so this module is an exact, pure-Python port of the Redis 7
version of that function (with ``nocase=0``):

* matching works on **bytes**: the pattern and the text are encoded as UTF-8, so ``?`` matches
  one byte (``?`` does not match ``"é"``, which is two bytes);
* C ``char`` is signed on x86-64, so in a range ``[a-z]`` bytes >= 0x80 compare as negative
  numbers; reversed ranges are swapped;
* backslash escapes work inside and outside brackets, a trailing lone backslash matches a literal
  backslash, an unterminated ``[`` consumes the rest of the pattern, ``[]`` closes an empty class,
  and reading past the end of the pattern sees the terminating NUL byte;
* a non-empty pattern never matches the empty string (not even ``*``);
* more than 1000 nested ``*`` never match, and the ``skipLongerMatches`` early exit is kept.

:func:`glob_match` is the faithful interpreter; :func:`compile_glob` builds a fast matcher (plain
string operations or one compiled regular expression) that gives the same answer on every input.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from typing import Final

__all__ = ["compile_glob", "escape_glob", "glob_match", "literal_prefix"]

_STAR: Final = 0x2A  # '*'
_QUESTION: Final = 0x3F  # '?'
_LBRACKET: Final = 0x5B  # '['
_RBRACKET: Final = 0x5D  # ']'
_BACKSLASH: Final = 0x5C  # '\\'
_CARET: Final = 0x5E  # '^'
_DASH: Final = 0x2D  # '-'

#: ``if (nesting > 1000) return 0;`` in ``stringmatchlen_impl``.
_MAX_NESTING: Final = 1000

# Outcomes of one run of the body of ``stringmatchlen_impl`` (see ``_run``).
_NO_MATCH: Final = 0
_MATCH: Final = 1
_STAR_LOOP: Final = 2

_GLOB_SPECIALS: Final = frozenset("*?[]\\")


def _at(data: bytes, index: int) -> int:
    """Return ``data[index]``, or the terminating NUL byte when ``index`` is past the end.

    Args:
        data: A NUL-terminated buffer in C (an sds string), here plain bytes.
        index: A non-negative offset, possibly past the end of ``data``.

    Returns:
        The unsigned byte value at ``index``, or 0 past the end.
    """
    return data[index] if index < len(data) else 0


def _signed(byte: int) -> int:
    """Return the value of an unsigned byte as a signed C ``char`` (x86-64)."""
    return byte - 256 if byte >= 0x80 else byte


def _bracket(pattern: bytes, pos: int, char: int) -> tuple[bool, int]:
    """Match one byte against the bracket class that starts right after a ``[``.

    Port of the ``case '['`` branch of ``stringmatchlen_impl`` (``nocase=0``). How far the class
    extends depends on the pattern only, never on ``char``.

    Args:
        pattern: The whole pattern, as bytes.
        pos: Offset just after the opening ``[``.
        char: The byte of the text to match (unsigned).

    Returns:
        Whether ``char`` is in the class, and the offset of the last byte of the class (its
        closing ``]``; for an unterminated class, the last byte of the pattern), so that the
        caller's ``pattern++`` moves past the class.
    """
    end = len(pattern)
    negate = _at(pattern, pos) == _CARET
    if negate:
        pos += 1
    match = False
    while True:
        current = _at(pattern, pos)
        if current == _BACKSLASH and end - pos >= 2:
            pos += 1
            if pattern[pos] == char:
                match = True
        elif current == _RBRACKET:
            break
        elif end - pos == 0:
            # ``pattern--; patternLen++;``: the caller's ``pattern++`` then lands on the end.
            pos -= 1
            break
        elif end - pos >= 3 and pattern[pos + 1] == _DASH:
            start, stop = _signed(current), _signed(pattern[pos + 2])
            if start > stop:
                start, stop = stop, start
            pos += 2
            if start <= _signed(char) <= stop:
                match = True
        elif current == char:
            match = True
        pos += 1
    return match != negate, pos


def _run(pattern: bytes, text: bytes, pos: int, tpos: int) -> tuple[int, int, int]:
    """Run the body of one ``stringmatchlen_impl`` call until it returns or starts a ``*`` loop.

    The C function keeps ``pattern``/``patternLen`` (and ``string``/``stringLen``) in step and
    every recursive call shares the end of the original buffers, so offsets are enough here.

    Args:
        pattern: The whole pattern, as bytes.
        text: The whole text, as bytes.
        pos: Offset of this call's ``pattern`` pointer.
        tpos: Offset of this call's ``string`` pointer.

    Returns:
        ``(_MATCH, ...)`` or ``(_NO_MATCH, ...)`` when the call returns without recursing, or
        ``(_STAR_LOOP, star, tpos)`` when it reaches a ``*`` (the last of a run, at offset
        ``star``) that is followed by more pattern: the C code then calls itself on
        ``pattern[star + 1:]`` against ``text[k:]`` for ``k = tpos, tpos + 1, ...``.
    """
    end, tend = len(pattern), len(text)
    while pos < end and tpos < tend:
        current = pattern[pos]
        if current == _STAR:
            while pos < end and _at(pattern, pos + 1) == _STAR:
                pos += 1
            if end - pos == 1:
                return _MATCH, pos, tpos
            return _STAR_LOOP, pos, tpos
        if current == _QUESTION:
            tpos += 1
        elif current == _LBRACKET:
            match, pos = _bracket(pattern, pos + 1, text[tpos])
            if not match:
                return _NO_MATCH, pos, tpos
            tpos += 1
        else:
            if current == _BACKSLASH and end - pos >= 2:
                pos += 1
            if pattern[pos] != text[tpos]:
                return _NO_MATCH, pos, tpos
            tpos += 1
        pos += 1
        if tpos == tend:
            while _at(pattern, pos) == _STAR:
                pos += 1
            break
    return (_MATCH if pos == end and tpos == tend else _NO_MATCH), pos, tpos


def _match_bytes(pattern: bytes, text: bytes) -> bool:
    """Port of Redis 7's ``stringmatchlen(pattern, plen, text, tlen, 0)``, without recursion.

    A call that enters a ``*`` loop only ever returns 1 (a match) or 0 with
    ``skipLongerMatches`` set, and once that flag is set every pending call returns 0. So only the
    innermost ``*`` loop ever moves on to the next text offset, and when it runs out of text the
    whole match fails. That needs no call stack, only the innermost loop and the nesting depth
    (Python's recursion limit would be hit long before the C ``nesting > 1000`` limit).

    Args:
        pattern: The pattern, as bytes.
        text: The text, as bytes.

    Returns:
        Whether Redis considers that ``text`` matches ``pattern``.
    """
    tend = len(text)
    pos, tpos = 0, 0
    nesting = 0
    star_pos, star_tpos = -1, -1  # the innermost ``*`` loop: pattern and text offsets
    while True:
        outcome, pos, tpos = _run(pattern, text, pos, tpos)
        if outcome == _MATCH:
            return True
        if outcome == _STAR_LOOP:
            nesting += 1
            if nesting > _MAX_NESTING:
                # Every call of this loop returns 0 at once; the loop runs out of text.
                return False
            star_pos, star_tpos = pos + 1, tpos
            pos = star_pos
            continue
        if star_pos < 0:
            return False
        star_tpos += 1
        if star_tpos >= tend:
            return False  # ``*skipLongerMatches = 1; return 0;`` all the way up
        pos, tpos = star_pos, star_tpos


def glob_match(pattern: str, text: str) -> bool:
    """Tell whether ``text`` matches the Redis glob ``pattern``, exactly as Redis 7 does.

    Both strings are encoded as UTF-8 and matched byte by byte, like ``KEYS`` and
    ``SCAN ... MATCH`` do (``stringmatchlen`` with ``nocase=0``).

    Args:
        pattern: A Redis glob pattern.
        text: The string to test (a key, a device id).

    Returns:
        Whether Redis would report ``text`` as matching ``pattern``.
    """
    return _match_bytes(pattern.encode(), text.encode())


# --- Compilation -------------------------------------------------------------------------------

#: A token of a compiled pattern: ``None`` for a run of ``*``, otherwise the set of bytes that
#: the token matches (it always consumes exactly one byte of the text).
_Token = frozenset[int] | None
_ALL_BYTES: Final = frozenset(range(256))


def _tokenize(pattern: bytes) -> list[_Token]:
    """Split a pattern into tokens, advancing through it exactly as ``stringmatchlen`` does.

    Where ``stringmatchlen`` moves in the pattern never depends on the text, only whether each
    token accepts the current byte does; so each class is evaluated for all 256 byte values.

    Args:
        pattern: The pattern, as bytes.

    Returns:
        The tokens: ``None`` for a run of ``*``, else the set of bytes the token accepts.
    """
    end = len(pattern)
    tokens: list[_Token] = []
    pos = 0
    while pos < end:
        current = pattern[pos]
        if current == _STAR:
            while pos < end and _at(pattern, pos + 1) == _STAR:
                pos += 1
            tokens.append(None)
        elif current == _QUESTION:
            tokens.append(_ALL_BYTES)
        elif current == _LBRACKET:
            members = frozenset(b for b in range(256) if _bracket(pattern, pos + 1, b)[0])
            _, pos = _bracket(pattern, pos + 1, 0)
            tokens.append(members)
        else:
            if current == _BACKSLASH and end - pos >= 2:
                pos += 1
            tokens.append(frozenset((pattern[pos],)))
        pos += 1
    return tokens


def _literal(tokens: list[_Token]) -> str | None:
    """Return the text that a run of single-byte literal tokens matches, if there is one.

    Args:
        tokens: Tokens without ``*``.

    Returns:
        The literal as a str, or None when a token accepts several bytes or the bytes are not
        UTF-8 (which cannot happen for a pattern that came from a str, but is handled anyway).
    """
    data = bytearray()
    for token in tokens:
        if token is None or len(token) != 1:
            return None
        data.extend(token)
    try:
        return data.decode()
    except UnicodeDecodeError:  # pragma: no cover - literal runs of a UTF-8 pattern are UTF-8
        return None


def _byte_class(token: frozenset[int]) -> str:
    """Return a regular-expression atom (for latin-1 decoded bytes) matching one byte of a set.

    Args:
        token: The non-``*`` token, as a set of byte values.

    Returns:
        A regex atom that matches exactly one character whose code point is in ``token``.
    """
    if token == _ALL_BYTES:
        return "."
    if not token:
        return "(?!)"
    if len(token) == 1:
        (byte,) = token
        return re.escape(chr(byte))
    parts: list[str] = []
    values = sorted(token)
    start = prev = values[0]
    for value in [*values[1:], -2]:
        if value == prev + 1:
            prev = value
            continue
        parts.append(f"\\x{start:02x}" if start == prev else f"\\x{start:02x}-\\x{prev:02x}")
        start = prev = value
    return "[" + "".join(parts) + "]"


def _regex(tokens: list[_Token]) -> str:
    """Translate tokens to a regular expression that ``fullmatch`` uses like ``stringmatchlen``.

    The text is matched as latin-1 decoded UTF-8 bytes (one character per byte). With a non-empty
    text, ``stringmatchlen`` matches each segment between two ``*`` at the leftmost place it fits
    and never reconsiders it (``skipLongerMatches``); since every other token consumes exactly one
    byte, that is also the plain glob semantics. Each middle segment is wrapped as
    ``(?=(?P<gN>.*?SEGMENT))(?P=gN)``, an atomic "find the leftmost match and commit" that keeps
    the work linear per ``*`` where a plain ``.*`` could backtrack polynomially.

    Args:
        tokens: The tokens of the pattern (at least one that is not ``*``).

    Returns:
        The source of the regular expression (to compile with ``re.DOTALL``).
    """
    segments: list[list[str]] = [[]]
    for token in tokens:
        if token is None:
            segments.append([])
        else:
            segments[-1].append(_byte_class(token))
    parts = ["".join(segments[0])]
    for number, segment in enumerate(segments[1:-1]):
        body = "".join(segment)
        parts.append(f"(?=(?P<g{number}>.*?{body}))(?P=g{number})")
    if len(segments) > 1:
        parts.append(".*" + "".join(segments[-1]))
    return "".join(parts)


@functools.lru_cache(maxsize=256)
def compile_glob(pattern: str) -> Callable[[str], bool]:
    """Build a fast matcher equivalent to ``lambda text: glob_match(pattern, text)``.

    The matchers of the last 256 patterns are cached: a query that pages through results
    compiles its pattern once.

    Common shapes get plain string operations (``lit``: equality, ``lit*``: prefix, ``*lit``:
    suffix, ``*lit*``: substring, ``*``: non-empty); UTF-8 is self-synchronising, so these agree
    with byte-wise matching. Other patterns become one compiled regular expression over the
    latin-1 decoded UTF-8 bytes of the text (ASCII text is used as is). Patterns with more than
    1000 runs of ``*`` (where Redis' nesting limit can apply) use the interpreter.

    Args:
        pattern: A Redis glob pattern.

    Returns:
        A function telling whether a text matches ``pattern``.
    """
    raw = pattern.encode()
    if not raw:
        return lambda text: not text
    tokens = _tokenize(raw)
    stars = tokens.count(None)
    if stars > _MAX_NESTING:
        return lambda text: _match_bytes(raw, text.encode())

    if stars == 0:
        literal = _literal(tokens)
        if literal is not None:
            return lambda text: text == literal
    elif tokens == [None]:
        return lambda text: text != ""
    elif stars == 1 and tokens[-1] is None:
        prefix = _literal(tokens[:-1])
        if prefix is not None:
            return lambda text: text.startswith(prefix)
    elif stars == 1 and tokens[0] is None:
        suffix = _literal(tokens[1:])
        if suffix is not None:
            return lambda text: text.endswith(suffix)
    elif stars == 2 and tokens[0] is None and tokens[-1] is None:
        middle = _literal(tokens[1:-1])
        if middle is not None:
            return lambda text: middle in text

    fullmatch = re.compile(_regex(tokens), re.DOTALL).fullmatch

    def matcher(text: str) -> bool:
        if not text.isascii():
            text = text.encode().decode("latin-1")
        return fullmatch(text) is not None

    return matcher


def literal_prefix(pattern: str) -> str:
    """Return the literal text that every string matched by ``pattern`` starts with.

    That is the run of literal characters before the first ``*``, ``?`` or ``[`` (outside an
    escape), with ``\\x`` escapes resolved; a trailing lone backslash is a literal backslash. It
    is sound: ``glob_match(pattern, text)`` implies ``text.startswith(literal_prefix(pattern))``,
    so it can narrow a lexicographic range scan.

    Args:
        pattern: A Redis glob pattern.

    Returns:
        The literal prefix (possibly empty).
    """
    raw = pattern.encode()
    end = len(raw)
    prefix = bytearray()
    pos = 0
    while pos < end:
        current = raw[pos]
        if current in (_STAR, _QUESTION, _LBRACKET):
            break
        if current == _BACKSLASH and end - pos >= 2:
            pos += 1
        prefix.append(raw[pos])
        pos += 1
    # The run stops on an ASCII byte or at the end, both character boundaries of the UTF-8
    # pattern, and dropping escaping backslashes (ASCII too) keeps the bytes valid UTF-8.
    return prefix.decode()


def escape_glob(text: str) -> str:
    """Escape ``text`` so that, as a Redis glob pattern, it matches exactly ``text``.

    Each of ``*``, ``?``, ``[``, ``]`` and ``\\`` gets a backslash in front. The result can be
    put in front of another pattern: with a non-empty ``text``, ``escape_glob(text) + pattern``
    matches exactly the strings ``text + rest`` where ``glob_match(pattern, rest)``, or where
    ``rest`` is empty and ``pattern`` has nothing but ``*`` (a key prefix like ``t[1]`` never
    matches keys of prefix ``t1``).

    Args:
        text: Any string.

    Returns:
        The escaped pattern.
    """
    return "".join("\\" + char if char in _GLOB_SPECIALS else char for char in text)
