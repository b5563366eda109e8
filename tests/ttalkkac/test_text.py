"""Where parsed JSON holds text that is not valid Unicode."""

from __future__ import annotations

import json

import pytest

from ttalkkac.text import invalid_unicode_at, is_valid_unicode


@pytest.mark.parametrize(
    ("value", "where"),
    [
        ("fine 회의 😀", None),
        ({"meeting": [{"text": "ok"}, {"text": "a\ud800"}]}, "meeting[1].text"),
        ({"a": {"b": ["x", "\udfff"]}}, "a.b[1]"),
        ("\ud83d", "(root)"),
        ({"ok": 1, "\ud800": 2}, "(root) (a key)"),
        ([1, 2.5, None, True], None),
    ],
)
def test_invalid_unicode_at(value: object, where: str | None) -> None:
    assert invalid_unicode_at(value) == where


def test_json_escapes_decode_to_what_utf8_cannot_encode() -> None:
    value = json.loads('{"meeting": "\\ud800 hello"}')
    with pytest.raises(UnicodeEncodeError):
        value["meeting"].encode("utf-8")
    assert invalid_unicode_at(value) == "meeting"
    # A proper pair decodes to one code point: valid.
    assert is_valid_unicode(json.loads('"\\ud83d\\ude00"'))


def test_deep_values_are_walked_without_recursion() -> None:
    value: object = "\ud800"
    for _ in range(5000):
        value = [value]
    assert invalid_unicode_at(value) == "[0]" * 5000
