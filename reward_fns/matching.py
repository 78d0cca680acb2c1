"""Item normalisation and set F1 of the ImageEdit-R1 reward (exact mode, the paper's reward).

`normalise_item` is the definition; `normalise_items` / `normalise_lines` compute the same thing for
many items with a constant number of whole-text passes, so a megabyte of distinct items stays fast.
"""

from __future__ import annotations

import re
import string
import unicodedata
from collections.abc import Iterable, Sequence
from itertools import repeat

#: Curly quotes stripped from item ends besides ASCII punctuation (U+2018, U+2019, U+201C, U+201D).
CURLY_QUOTES = "\u2018\u2019\u201c\u201d"
#: Highest code point `str.isspace` accepts (U+3000, ideographic space; a test checks all of Unicode).
_LAST_WHITESPACE = 0x3000
#: Every character `str.isspace` accepts (what `str.split()` and regex `\s` treat as whitespace).
UNICODE_WHITESPACE = "".join(chr(c) for c in range(_LAST_WHITESPACE + 1) if chr(c).isspace())
#: Characters stripped from both ends of a normalised item.
STRIP_CHARS = UNICODE_WHITESPACE + string.punctuation + CURLY_QUOTES

# Whitespace runs other than the newline that separates items in the joined text.
_WHITESPACE_RUN_EXCEPT_NEWLINE = re.compile(r"[^\S\n]+")
# ASCII text without these and without double spaces has nothing to collapse.
_ASCII_WHITESPACE_EXCEPT_SPACE_NEWLINE = "\t\r\x0b\x0c\x1c\x1d\x1e\x1f"
# Below this many items the per-item path is cheaper than the joined passes.
_JOINED_PATH_MIN_ITEMS = 32


def normalise_item(item: str) -> str:
    """NFKC, lowercase, collapse internal whitespace runs to one space, strip whitespace, ASCII
    punctuation and curly quotes from both ends. An empty result means the item is dropped."""
    text = unicodedata.normalize("NFKC", item).lower()
    return " ".join(text.split()).strip(STRIP_CHARS)


def normalise_items(items: Iterable[str]) -> frozenset[str]:
    """The set of non-empty normalised items; equal to `{normalise_item(i) for i in items} - {""}`."""
    items = items if isinstance(items, (list, tuple)) else list(items)
    if len(items) < _JOINED_PATH_MIN_ITEMS:
        return frozenset(filter(None, map(normalise_item, set(items))))
    return normalise_lines(join_lines(items))


def normalise_items_ordered(items: Iterable[str]) -> list[str]:
    """Distinct non-empty normalised items in order of first appearance (soft modes cap by order)."""
    items = items if isinstance(items, (list, tuple)) else list(items)
    if len(items) < _JOINED_PATH_MIN_ITEMS:
        return [i for i in dict.fromkeys(map(normalise_item, dict.fromkeys(items))) if i]
    return normalise_lines_ordered(join_lines(items))


def join_lines(items: Sequence[str]) -> str:
    """Items as one text, one per line; a newline inside an item becomes a space (both are
    whitespace, and whitespace runs collapse, so the normalised item is the same)."""
    text = "\n".join(items)
    if text.count("\n") != len(items) - 1:  # some item holds a newline (JSON strings can)
        text = "\n".join(i.replace("\n", " ") for i in items)
    return text


def normalise_lines(text: str) -> frozenset[str]:
    """`normalise_items(text.split("\n"))` in a constant number of whole-text passes."""
    stripped = set(map(str.strip, set(_normalise_text(text).split("\n")), repeat(STRIP_CHARS)))
    stripped.discard("")
    return frozenset(stripped)


def normalise_lines_ordered(text: str) -> list[str]:
    """`normalise_items_ordered(text.split("\n"))` in a constant number of whole-text passes."""
    lines = dict.fromkeys(_normalise_text(text).split("\n"))
    stripped = dict.fromkeys(map(str.strip, lines, repeat(STRIP_CHARS)))
    stripped.pop("", None)
    return list(stripped)


def _normalise_text(text: str) -> str:
    """NFKC, lowercase and whitespace collapse of a whole text of newline-separated items. Equal to
    doing it per line because no character's NFKC or lowercase contains a newline, and a newline
    neither composes under NFKC nor is case-ignorable for the final-sigma rule (all of Unicode is
    checked in tests/test_reward_props.py); stripping stays per line."""
    text = unicodedata.normalize("NFKC", text).lower()
    if not text.isascii() or "  " in text or any(c in text for c in _ASCII_WHITESPACE_EXCEPT_SPACE_NEWLINE):
        text = _WHITESPACE_RUN_EXCEPT_NEWLINE.sub(" ", text)
    return text


def set_f1(predicted: frozenset[str] | set[str], truth: frozenset[str] | set[str]) -> float:
    """F1 of two sets: both empty 1.0, one empty 0.0, else 2PR/(P+R) (0.0 when nothing matches)."""
    if not predicted and not truth:
        return 1.0
    if not predicted or not truth:
        return 0.0
    hits = len(predicted & truth)
    # 2PR/(P+R) with P = hits/|pred|, R = hits/|truth| simplifies to 2*hits/(|pred|+|truth|).
    return 2.0 * hits / (len(predicted) + len(truth))
