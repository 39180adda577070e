"""text.py: what came from a server or a tenant reaches the terminal with every control character made visible."""

from __future__ import annotations

import io
import sys

import pytest

from agency_pgvector import text

DANGEROUS = [*range(0x00, 0x20), *range(0x7F, 0xA0), 0x061C, 0x200E, 0x200F, *range(0x202A, 0x202F),
             *range(0x2066, 0x206A), 0x2028, 0x2029]


@pytest.mark.parametrize("raw, shown", [
    ("\x1b[2Jcleared", "\\x1b[2Jcleared"),  # ESC: a CSI sequence would clear the screen
    ("\x9b31mred", "\\x9b31mred"),  # C1 CSI on its own
    ("abc\u202egnp.exe", "abc\\u202egnp.exe"),  # right-to-left override
    ("one\u2028two", "one\\u2028two"),
    ("bell\x07 back\x08 del\x7f", "bell\\x07 back\\x08 del\\x7f"),
    ("line\nnext\ttab\r", "line\\x0anext\\x09tab\\x0d"),
    ("café 中文 ✓ -- 'quoted'", "café 中文 ✓ -- 'quoted'"),  # ordinary text is left alone
])
def test_clean_shows_control_and_bidi_characters_as_escapes(raw, shown):
    assert text.clean(raw) == shown


def test_no_dangerous_character_survives_clean():
    raw = "".join(chr(code) for code in DANGEROUS)
    cleaned = text.clean(raw)
    assert not set(cleaned) & set(raw)
    assert cleaned.isprintable()


def test_keep_leaves_only_the_named_characters():
    assert text.clean("a\nb\tc\rd\x1b", keep="\n") == "a\nb\\x09c\\x0dd\\x1b"
    assert text.clean("a\nb\tc", keep="\n\t") == "a\nb\tc"


def test_clean_takes_any_value():
    assert text.clean(ValueError("bad\x1b")) == "bad\\x1b" and text.clean(None) == "None" and text.clean(12) == "12"


@pytest.mark.parametrize("value, line", [
    ("first\nsecond", "first"), ("\n\n  padded\nrest", "padded"), ("", "no answer"), (None, "no answer"),
    (RuntimeError("boom\ndetail"), "boom"), (KeyError(), "KeyError"), (TimeoutError(""), "TimeoutError"),
])
def test_first_line(value, line):
    assert text.first_line(value) == line


def test_cleaned_stdout_cleans_what_other_code_prints(monkeypatch):
    out = io.StringIO()
    monkeypatch.setattr(sys, "stdout", out)
    with text.cleaned_stdout():
        print("row\x1b]0;title\x07\tvalue")
        sys.stdout.flush()
        assert sys.stdout.getvalue().startswith("row\\x1b")  # other attributes are the real stream's
    assert out.getvalue() == "row\\x1b]0;title\\x07\tvalue\n"
