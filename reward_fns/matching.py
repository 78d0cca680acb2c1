"""Item normalisation and set F1 of the ImageEdit-R1 reward (exact mode, the paper's reward).

Linear time on any input: each item is normalised once (duplicates first dropped), with a fixed
number of passes over its characters.
"""

from __future__ import annotations

import string
import unicodedata
from collections.abc import Iterable

#: Curly quotes stripped from item ends besides ASCII punctuation (U+2018, U+2019, U+201C, U+201D).
CURLY_QUOTES = "\u2018\u2019\u201c\u201d"
#: Highest code point `str.isspace` accepts (U+3000, ideographic space; a test checks all of Unicode).
_LAST_WHITESPACE = 0x3000
#: Every character `str.isspace` accepts (what `str.split()` treats as whitespace).
UNICODE_WHITESPACE = "".join(chr(c) for c in range(_LAST_WHITESPACE + 1) if chr(c).isspace())
#: Characters stripped from both ends of a normalised item.
STRIP_CHARS = UNICODE_WHITESPACE + string.punctuation + CURLY_QUOTES


def normalise_item(item: str) -> str:
    """NFKC, lowercase, collapse internal whitespace runs to one space, strip whitespace, ASCII
    punctuation and curly quotes from both ends. An empty result means the item is dropped."""
    text = unicodedata.normalize("NFKC", item).lower()
    return " ".join(text.split()).strip(STRIP_CHARS)


def normalise_items(items: Iterable[str]) -> frozenset[str]:
    """The set of non-empty normalised items."""
    return frozenset(filter(None, map(normalise_item, set(items))))


def normalise_items_ordered(items: Iterable[str]) -> list[str]:
    """Distinct non-empty normalised items in order of first appearance (soft modes cap by order)."""
    return [i for i in dict.fromkeys(map(normalise_item, dict.fromkeys(items))) if i]


def set_f1(predicted: frozenset[str] | set[str], truth: frozenset[str] | set[str]) -> float:
    """F1 of two sets: both empty 1.0, one empty 0.0, else 2PR/(P+R) (0.0 when nothing matches)."""
    if not predicted and not truth:
        return 1.0
    if not predicted or not truth:
        return 0.0
    hits = len(predicted & truth)
    # 2PR/(P+R) with P = hits/|pred|, R = hits/|truth| simplifies to 2*hits/(|pred|+|truth|).
    return 2.0 * hits / (len(predicted) + len(truth))
