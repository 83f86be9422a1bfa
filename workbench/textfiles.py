"""Reading the text files users write (manifest, specs, locks, baselines), hardened."""

import stat
from pathlib import Path

from workbench.errors import WorkbenchError


def read_text(path: Path, limit: int, what: str) -> str:
    """A user-written text file, or a one-line error naming it: missing, not a regular
    file (a FIFO would block), over limit bytes, or not UTF-8."""
    try:
        info = path.stat()
    except FileNotFoundError:
        raise WorkbenchError(f"{path}: no such {what}") from None
    except (OSError, ValueError) as exc:
        raise WorkbenchError(f"{path}: cannot read {what}: {exc}") from None
    if not stat.S_ISREG(info.st_mode):
        raise WorkbenchError(f"{path}: not a regular file; a {what} is a text file")
    if info.st_size > limit:
        raise WorkbenchError(
            f"{path}: {info.st_size} bytes; a {what} over {limit // 1024} KiB is refused"
        )
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise WorkbenchError(f"{path}: cannot read {what}: {exc.strerror}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise WorkbenchError(
            f"{path}:{line}: not UTF-8 (byte 0x{data[exc.start]:02x}); save the {what} as UTF-8"
        ) from None
    return text.replace("\r\n", "\n").replace("\r", "\n")  # as text mode reads it
