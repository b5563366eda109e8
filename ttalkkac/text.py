"""Checks on text that arrives from outside (request bodies, uploaded JSONL lines).

JSON escapes can spell lone surrogates (``"\\ud800"``): ``json.loads`` accepts them and Python
keeps them in a ``str``, but they are not Unicode scalar values, so UTF-8 cannot encode them and
everything downstream that encodes (SQLite, the tokenizer, hashing, logging to a UTF-8 stream)
fails far from the edge. Checking once where the text enters keeps those failures out.
"""

from __future__ import annotations

import re
from typing import Any

# The surrogate block: the only code points a Python str can hold that are not scalar values.
_SURROGATE = re.compile("[\ud800-\udfff]")


def is_valid_unicode(text: str) -> bool:
    """Whether ``text`` holds only Unicode scalar values (so it encodes to UTF-8)."""
    return _SURROGATE.search(text) is None


def invalid_unicode_at(value: Any) -> str | None:
    """Where parsed JSON (dicts, lists, strings) holds a string that is not valid Unicode.

    Returns a location such as ``meeting[0].text`` (``(root)`` for a bare string; ``... (a
    key)`` for a dict key), or ``None`` when every string is valid. The location never repeats
    the invalid text, so it is safe to put in an answer. Iterative, in document order: a value
    nested deeper than the recursion limit is walked like any other.
    """
    stack: list[tuple[str, Any]] = [("", value)]
    while stack:
        where, item = stack.pop()
        if isinstance(item, str):
            if not is_valid_unicode(item):
                return where or "(root)"
        elif isinstance(item, dict):
            children = []
            for key, child in item.items():
                if isinstance(key, str) and not is_valid_unicode(key):
                    return f"{where or '(root)'} (a key)"
                children.append((f"{where}.{key}" if where else str(key), child))
            stack.extend(reversed(children))
        elif isinstance(item, list | tuple):
            stack.extend(reversed([(f"{where}[{i}]", child) for i, child in enumerate(item)]))
    return None
