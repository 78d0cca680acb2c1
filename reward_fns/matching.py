"""Item normalisation and set F1 of the ImageEdit-R1 reward (exact mode, the paper's reward).

`normalise_item` is the definition; `normalise_items` computes the same thing for many items with a
constant number of whole-string passes, so a megabyte of distinct items stays linear and fast.
"""

from __future__ import annotations

import re
import string
import unicodedata
from collections.abc import Collection, Iterable

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
# Below this many distinct items the per-item path is cheaper than the joined passes.
_JOINED_PATH_MIN_ITEMS = 32


def normalise_item(item: str) -> str:
    """NFKC, lowercase, collapse internal whitespace runs to one space, strip whitespace, ASCII
    punctuation and curly quotes from both ends. An empty result means the item is dropped."""
    text = unicodedata.normalize("NFKC", item).lower()
    return " ".join(text.split()).strip(STRIP_CHARS)


def normalise_items(items: Iterable[str]) -> frozenset[str]:
    """The set of non-empty normalised items; equal to `{normalise_item(i) for i in items} - {""}`."""
    unique = set(items)
    if len(unique) < _JOINED_PATH_MIN_ITEMS:
        return frozenset(filter(None, map(normalise_item, unique)))
    return frozenset(filter(None, _normalise_joined(unique)))


def normalise_items_ordered(items: Iterable[str]) -> list[str]:
    """Distinct non-empty normalised items in order of first appearance (soft modes cap by order)."""
    unique = list(dict.fromkeys(items))
    if len(unique) < _JOINED_PATH_MIN_ITEMS:
        normalised = map(normalise_item, unique)
    else:
        normalised = _normalise_joined(unique)
    return [item for item in dict.fromkeys(normalised) if item]


def _normalise_joined(unique: Collection[str]) -> list[str]:
    """`normalise_item` over many items at once: join on newline, NFKC + lowercase the whole text,
    collapse whitespace, split, strip. Valid because a newline is whitespace (so replacing one inside
    an item changes nothing after collapsing), no character's NFKC or lowercase contains a newline,
    and a newline neither composes under NFKC nor is case-ignorable for the final-sigma rule."""
    text = "\n".join(unique)
    if text.count("\n") != len(unique) - 1:  # some item holds a newline (JSON strings can)
        text = "\n".join(i.replace("\n", " ") for i in unique)
    text = unicodedata.normalize("NFKC", text).lower()
    if not text.isascii() or "  " in text or any(c in text for c in _ASCII_WHITESPACE_EXCEPT_SPACE_NEWLINE):
        text = _WHITESPACE_RUN_EXCEPT_NEWLINE.sub(" ", text)
    return [line.strip(STRIP_CHARS) for line in text.split("\n")]


def set_f1(predicted: frozenset[str] | set[str], truth: frozenset[str] | set[str]) -> float:
    """F1 of two sets: both empty 1.0, one empty 0.0, else 2PR/(P+R) (0.0 when nothing matches)."""
    if not predicted and not truth:
        return 1.0
    if not predicted or not truth:
        return 0.0
    hits = len(predicted & truth)
    # 2PR/(P+R) with P = hits/|pred|, R = hits/|truth| simplifies to 2*hits/(|pred|+|truth|).
    return 2.0 * hits / (len(predicted) + len(truth))
