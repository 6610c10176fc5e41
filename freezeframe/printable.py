"""Text that came from a file name, a video id, metadata or a store, made safe to print on a terminal or in a log.

Such text may hold a newline followed by `error: ...`, a carriage return, ANSI/OSC escape sequences (which move the
cursor or set a terminal's title) or bidirectional overrides. `printable` writes every character Python calls
non-printable as its escape, the way `repr` does (`\\n`, `\\r`, `\\x1b`, `\\u202e`), so one printed line stays one
line that shows what the data holds. Printable text is returned unchanged. JSON output and failures.jsonl stay
exact JSON instead (json escapes control characters itself).
"""

from __future__ import annotations


def printable(text: object) -> str:
    """`str(text)` with every non-printable character (controls, escapes, format characters) escaped repr-style."""
    text = str(text)
    if text.isprintable():
        return text
    return "".join(char if char.isprintable() else repr(char)[1:-1] for char in text)


def printable_lines(lines: list[str]) -> str:
    """Lines built from data, each escaped, joined into one text (a value cannot add a line of its own)."""
    return "\n".join(printable(line) for line in lines)
