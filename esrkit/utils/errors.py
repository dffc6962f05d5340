"""How errors quote what a user gave: short, complete quotes, and an exception's text as a user should see it.

Why: an error message echoes the bad token so the user can find it, but a 50 MB line echoed whole buries the
message, and stripping quote characters from a whole message (to undo ``KeyError``'s repr) used to eat the
closing quote of every "got '...'" in it.
"""

from __future__ import annotations

import difflib
import errno
from collections.abc import Iterable
from typing import Any

QUOTE_LIMIT = 80  # characters of a user's token shown in an error message


def quote(value: Any, limit: int = QUOTE_LIMIT) -> str:
    """``repr(value)`` cut to about ``limit`` characters, saying how long the original was when it was cut."""
    text = repr(value)
    if len(text) <= limit:
        return text
    size = f" ({len(value):,} characters)" if isinstance(value, (str, bytes)) else ""
    return f"{text[: limit - 1]}…{size}"


def did_you_mean(names: Iterable[str], known: Iterable[str]) -> str:
    """An error's hint naming, for each misspelt name, the known one closest to it where one is close:
    `` (did you mean 'hidden'?)``, or `` (did you mean 'hiden' -> 'hidden', ...?)`` for several; "" if none
    is."""
    names, known = sorted(names), sorted(known)
    close = {n: difflib.get_close_matches(n, known, n=1, cutoff=0.8) for n in names}
    found = {n: m[0] for n, m in close.items() if m}
    if not found:
        return ""
    if len(names) == 1:
        return f" (did you mean {found[names[0]]!r}?)"
    return f" (did you mean {', '.join(f'{n!r} -> {m!r}' for n, m in found.items())}?)"


def choices(name: str, known: Iterable[str]) -> str:
    """The tail of an "unknown name" error: the close match if there is one, then every known name
    (`` (did you mean 'sasrec'?); known: bert4rec, gru4rec, sasrec``)."""
    known = sorted(known)
    return f"{did_you_mean([name], known)}; known: {', '.join(known) or '(none)'}"


def error_text(exc: BaseException) -> str:
    """The message of ``exc`` for a person: ``KeyError`` keeps its text without the repr quotes around it."""
    if isinstance(exc, KeyError) and len(exc.args) == 1 and isinstance(exc.args[0], str):
        return exc.args[0]
    return str(exc)


def os_error_with_path(exc: OSError, path: Any, action: str = "writing") -> OSError:
    """The same error, naming the file it happened to and what to do when the disk is full.

    Why: a failed ``write()`` raises "No space left on device" with no file name, so the user cannot tell
    which disk filled up."""
    reason = exc.strerror or str(exc)
    hint = ""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        hint = "; free space on that disk (or write somewhere else) and run the command again"
    return OSError(exc.errno, f"{reason} while {action} {path}{hint}")
