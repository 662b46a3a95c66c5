"""One log record, one line: client-chosen text (keys, paths, versions) cannot start a forged log line,
and signed-URL signatures never reach the log.

Cache keys are JSON strings, so a client can put CR/LF, NUL, terminal escapes or Unicode line
separators in them; the service logs keys. Escaping happens once, in the formatter, instead of at
every call site that logs a client's string.
"""

from __future__ import annotations

import logging
import re

# C0 and C1 controls and DEL (C1's CSI, 0x9b, drives some terminals like ESC [), plus the separators
# that str.splitlines() and many log viewers break lines on.
_ESCAPES: dict[int, str] = {c: f"\\x{c:02x}" for c in (*range(0x20), *range(0x7F, 0xA0))}
_ESCAPES.update({ord("\n"): "\\n", ord("\r"): "\\r", ord("\t"): "\\t", 0x2028: "\\u2028", 0x2029: "\\u2029"})


# A signed blob URL is a credential for its lifetime; the access log must not hand it to log readers.
_SIGNATURE = re.compile(r"([?&]sig=)[^&\s\"]+")


def redact(text: str) -> str:
    return _SIGNATURE.sub(r"\1REDACTED", text)


def one_line(text: str) -> str:
    """`text` with every control character and line separator written as a visible escape."""
    return text.translate(_ESCAPES)


class OneLineFormatter(logging.Formatter):
    """Escapes the formatted message (format string and arguments alike); a traceback that
    `log.exception` appends afterwards keeps its lines, which is what makes it readable."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        return one_line(redact(super().formatMessage(record)))
