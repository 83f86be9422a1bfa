"""The one error type that carries a message for the user."""

USAGE = 2
CHECK_FAILED = 1


class WorkbenchError(Exception):
    """A failure the user can act on: printed as one line, no traceback.

    exit_code follows the command contract: 2 for usage or bad input,
    1 for a check or build that failed.
    """

    def __init__(self, message: str, exit_code: int = USAGE):
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code
