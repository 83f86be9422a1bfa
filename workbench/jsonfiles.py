"""The state files the tool writes and reads back (workbench-env.json, record.json,
service.json, state.json): one JSON object each, with a format version, written atomically
and read tolerantly, so a file written by another version of workbench still reads."""

import json
import os
from dataclasses import asdict, fields
from pathlib import Path
from typing import ClassVar, Self


def write_atomic(path: Path, text: str, mode: int | None = None) -> None:
    """Replace path with text in one step (a reader sees the old file or the new one).
    mode (less the umask) applies from the file's creation, before anything is written."""
    tmp = path.with_name(f".{path.name}.{os.urandom(3).hex()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666 if mode is None else mode)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def read_object(path: Path) -> dict | None:
    """The JSON object in path, or None when it is missing, unreadable or not an object."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


class StateFile:
    """Mixin for a dataclass stored as one JSON object with a "version" key.

    Reading ignores keys it does not know (a newer writer's additions) and returns None
    when a field without a default is missing, so callers treat it as absent.
    """

    VERSION: ClassVar[int] = 1

    def to_json(self) -> dict:
        return {"version": self.VERSION, **asdict(self)}

    @classmethod
    def from_json(cls, data: dict) -> Self | None:
        known = {f.name for f in fields(cls)}
        try:
            return cls(**{key: value for key, value in data.items() if key in known})
        except TypeError:
            return None

    @classmethod
    def read(cls, path: Path) -> Self | None:
        data = read_object(path)
        return None if data is None else cls.from_json(data)

    def write(self, path: Path, mode: int | None = None) -> None:
        write_atomic(path, json.dumps(self.to_json(), indent=1, default=str) + "\n", mode)
