"""Text for the operator's terminal: anything that came from a server or a tenant goes through clean() first.

Tenants control table and column names, setting values, RAISE messages and so server error texts. Written raw
to a terminal, ESC/CSI sequences in them can recolour, retitle, move the cursor or hide lines, and bidi
overrides can make text read differently from what it is. clean() shows each such character as a visible escape.
"""

from __future__ import annotations

import sys
from functools import lru_cache

_C0 = range(0x00, 0x20)  # ESC (0x1b), BEL, BS, CR, ... (newline and tab only where a value is meant to span lines)
_DEL_C1 = range(0x7F, 0xA0)  # DEL, and C1: 0x9b is CSI on its own for some terminals, 0x85 is a line break
_BIDI = (0x061C, 0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A))  # marks, embeddings, overrides, isolates
_LINES = (0x2028, 0x2029)  # line and paragraph separators


def _visible(code: int) -> str:
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


_TABLE = {code: _visible(code) for code in (*_C0, *_DEL_C1, *_BIDI, *_LINES)}


def clean(value: object, keep: str = "") -> str:
    """str(value) with every control, bidi and line-separator character shown as \\xNN or \\uNNNN.
    `keep` lists the ones that stay as they are ("\\n" for a multi-line message, "\\t" for a log's continuations)."""
    return str(value).translate(_table(keep))


@lru_cache(maxsize=8)
def _table(keep: str) -> dict:
    return {code: text for code, text in _TABLE.items() if chr(code) not in keep}


class CleanStream:
    """A stdout stand-in that cleans what it is given (newlines kept): for output written by code we do not render."""

    def __init__(self, stream):
        self.stream = stream

    def write(self, data: str) -> int:
        return self.stream.write(clean(data, keep="\n\t"))

    def flush(self) -> None:
        self.stream.flush()

    def __getattr__(self, name):
        return getattr(self.stream, name)


def cleaned_stdout():
    """A context manager: sys.stdout cleaned while it is active."""
    import contextlib

    return contextlib.redirect_stdout(CleanStream(sys.stdout))


def first_line(value: object) -> str:
    """The first line of an error (or of any text the server sent), for one-sentence messages."""
    text = str(value).strip() if value is not None else ""
    if text:
        return text.splitlines()[0]
    return type(value).__name__ if isinstance(value, BaseException) else "no answer"
