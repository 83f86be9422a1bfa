"""The one error type that carries a message for the user, and how values are shown in it."""

from workbench.runtime import EXIT_USAGE

USAGE = EXIT_USAGE
CHECK_FAILED = 1
INTERRUPTED = 130  # Ctrl-C or SIGTERM (128 + SIGINT, as shells report it), after cleanup


class WorkbenchError(Exception):
    """A failure the user can act on: printed as one line, no traceback.

    exit_code follows the command contract: 2 for usage or bad input,
    1 for a check or build that failed (and 130, INTERRUPTED, for Ctrl-C or SIGTERM).
    """

    def __init__(self, message: str, exit_code: int = USAGE):
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


def printable(text: str) -> str:
    """text with control and other unprintable characters shown as escapes (\\n, \\x1b),
    so that a message stays one line and cannot drive the terminal."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def excerpt(value: object, limit: int = 120) -> str:
    """A user's value for a message: printable, and cut after limit characters."""
    text = printable(str(value))
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… ({len(text)} characters)"
