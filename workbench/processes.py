"""Whether a process recorded earlier still runs, read from /proc.

A record keeps a pid and its start time: the kernel reuses pids, so a pid alone may name a
stranger by the time a record is read back. A zombie (exited, not yet reaped by its parent)
counts as gone: it runs nothing and only its parent can clear it.
"""

from pathlib import Path


def _stat(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (which may hold spaces and
    parentheses): state first, then the parent pid, ..."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def start_time(pid: int | None) -> int | None:
    """When pid started (clock ticks after boot); None if it is gone or a zombie."""
    fields = _stat(pid) if pid and pid > 0 else None
    if fields is None or len(fields) < 20 or fields[0] in ("Z", "X"):
        return None
    try:
        return int(fields[19])
    except ValueError:
        return None


def alive(pid: int | None, started: int | None = None) -> bool:
    """Whether pid runs and, when its recorded start time is given, is still the process
    that started then (records written before start times were kept pass None)."""
    now = start_time(pid)
    return now is not None and (started is None or now == started)


def parent(pid: int) -> int | None:
    """pid's parent pid, None if pid is gone."""
    fields = _stat(pid)
    try:
        return int(fields[1]) if fields else None
    except (IndexError, ValueError):
        return None
