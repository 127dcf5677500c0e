"""Job code that reads as it runs. Pure: no I/O.

Reviewers approve a job by reading its code; the approval is worth what the reading is. Python
runs some text differently from how a person reads it:
- an encoding declaration other than UTF-8 (under `coding: utf-7`, `+AAo-` in a comment is a
  newline, and what follows it runs);
- bidirectional overrides and isolates, which reorder what a browser or editor shows (Trojan
  Source, CVE-2021-42574); invisible characters (zero width spaces, joiners), control
  characters (terminal escapes), and line or paragraph separators a browser breaks lines at
  where Python does not;
- identifiers that look like others (a Cyrillic `а` for a Latin `a`, full-width letters that
  Python folds to ASCII).
`check_source` refuses such files, naming the parameter and the rule, never the file or the
text. Every `.py` file of a job is checked, `main.py` and the modules of an archive alike.
What a job prints reaches reviewers and output checkers too: `visible` writes the same
characters there as escapes (`\u202e`), so a log cannot reorder or hide what they read.
"""

from __future__ import annotations

import io
import tokenize
import unicodedata
from collections.abc import Mapping

from gateway.errors import InvalidRequest

__all__ = ["check_source", "visible"]

_ALLOWED_CONTROLS = frozenset("\t\n\r\f")
_REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Co", "Zl", "Zp"})
"""Controls, format characters (bidirectional marks, zero width), private use, line and
paragraph separators."""
_RULE = (
    "Python files must be UTF-8 (no other encoding declared), with ASCII identifiers and no control, "
    "bidirectional, invisible or separator characters: they make code read otherwise than it runs"
)


def _is_readable(content: bytes) -> bool:
    try:
        encoding, _lines = tokenize.detect_encoding(io.BytesIO(content).readline)
    except SyntaxError:  # an unknown or contradictory declaration
        return False
    if encoding not in ("utf-8", "utf-8-sig"):
        return False
    try:
        text = content.decode("utf-8-sig")
    except UnicodeDecodeError:
        return False
    if any(unicodedata.category(ch) in _REFUSED_CATEGORIES and ch not in _ALLOWED_CONTROLS for ch in text):
        return False
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(text).readline))
    except (tokenize.TokenError, SyntaxError):  # not Python: it would not run either
        return False
    return all(token.string.isascii() for token in tokens if token.type == tokenize.NAME)


def check_source(files: Mapping[str, bytes], parameter: str) -> None:
    """Refuse (InvalidRequest naming `parameter` and the rule) a job whose Python files do not
    read as they run."""
    for name, content in files.items():
        if name.endswith(".py") and not _is_readable(content):
            raise InvalidRequest(f"{parameter}: {_RULE}")


def _is_hidden(ch: str) -> bool:
    return unicodedata.category(ch) in _REFUSED_CATEGORIES and ch not in "\t\n"


def visible(text: str) -> str:
    """`text` with every control, bidirectional, invisible or separator character (tabs and
    newlines aside) written as an escape, for the people who read a job's log."""
    if not any(_is_hidden(ch) for ch in text):
        return text
    return "".join(f"\\u{ord(ch):04x}" if _is_hidden(ch) else ch for ch in text)
