"""JSON log lines for servers that run in envs (the app runner), and their one-line failures."""

from __future__ import annotations

import datetime
import json
import logging
import sys
import traceback


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, app, logger, msg, plus a record's `fields`
    (extra={"fields": {...}}) and the traceback as exc."""

    app = "app"

    def format(self, record: logging.LogRecord) -> str:
        ts = datetime.datetime.fromtimestamp(record.created, datetime.timezone.utc)
        out = {
            "ts": ts.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "app": self.app,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        extra = getattr(record, "fields", None)
        if isinstance(extra, dict):
            out.update(extra)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def config(app: str, level: str = "INFO") -> dict:
    """logging.config.dictConfig for a server named app: JSON lines on stdout for its own
    loggers and uvicorn's; uvicorn's access log is replaced by the host guard's."""
    JsonFormatter.app = app
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": JsonFormatter}},
        "handlers": {
            "stdout": {
                "class": "logging.StreamHandler",
                "formatter": "json",
                "stream": "ext://sys.stdout",
            }
        },
        "loggers": {
            "uvicorn": {"handlers": ["stdout"], "level": level, "propagate": False},
            "uvicorn.error": {"handlers": ["stdout"], "level": level, "propagate": False},
            "uvicorn.access": {"handlers": [], "level": "WARNING", "propagate": False},
            "workbench": {"handlers": ["stdout"], "level": level, "propagate": False},
        },
        "root": {"handlers": ["stdout"], "level": "WARNING"},
    }


def fail(
    name: str, message: str, exc: BaseException | None = None, lines: int = 8, kind: str = "app"
) -> None:
    """Why the server (an app or an engine) cannot run: one line on stderr (what the
    supervisor reports), then the last lines of the traceback, indented, when there is one."""
    sys.stderr.write(f"workbench {kind} {name}: {message}".replace("\n", " ") + "\n")
    if exc is not None:
        text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        sys.stderr.write("\n".join("  " + t for t in text.rstrip().splitlines()[-lines:]) + "\n")
    sys.stderr.flush()
