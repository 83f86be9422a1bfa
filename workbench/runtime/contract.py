"""Every WORKBENCH_* environment variable the tool and its runtime read or set, declared once:
its name, parser, default (as you would write it), who sets it and what it does.

Code reads a variable through its declaration (`contract.LOG_LEVEL.get()`, or `.get(environ)`
for a mapping it was given) and names it through `.name` where it builds a child's
environment, so a variable has one spelling and one parser; `VARIABLES` is the reference a
docs page renders, and a test fails when the package names a WORKBENCH_* variable that is not
declared here. A value that does not parse raises ValueError naming the variable and what it
takes. Standard library only: env interpreters import it.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

PREFIX = "WORKBENCH_"


def text(raw: str) -> str:
    return raw


def words(raw: str) -> list[str]:
    """Comma- or space-separated words."""
    return raw.replace(",", " ").split()


def _number(raw: str, expected: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(expected) from None
    if value != value or value < 0:
        raise ValueError(expected)
    return value


def seconds(raw: str) -> float:
    value = _number(raw, "a number of seconds (0 or more)")
    if math.isinf(value):
        raise ValueError("a number of seconds (0 or more)")
    return value


def wait_seconds(raw: str) -> float | None:
    """Seconds or "inf"; None (do not wait) for 0."""
    return _number(raw, 'a number of seconds, or "inf"') or None


def path(raw: str) -> Path:
    return Path(raw).expanduser()


def login(raw: str) -> str:
    user, sep, password = raw.partition(":")
    if not sep or not user or not password:
        raise ValueError("USER:PASSWORD")
    return raw


def log_level(raw: str) -> str:
    level = raw.strip().upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise ValueError("DEBUG, INFO, WARNING, ERROR or CRITICAL")
    return level


def port(raw: str) -> int:
    expected = "a port number from 1 to 65535"
    if not raw.strip().isdigit() or not 0 < int(raw) < 65536:
        raise ValueError(expected)
    return int(raw)


@dataclass(frozen=True)
class Variable:
    name: str
    parse: Callable[[str], object]
    default: str | None  # as written in the environment; None: unset means "none"
    set_by: str  # "you", or the part of workbench that sets it for a process it starts
    description: str
    secret: bool = False  # never shown in errors, logs or argv
    empty_is_unset: bool = True  # False where an empty value means something (no GPUs)

    def raw(self, environ: Mapping[str, str] | None = None) -> str | None:
        """The value as set, or None when unset."""
        value = (os.environ if environ is None else environ).get(self.name)
        if value == "" and self.empty_is_unset:
            return None
        return value

    def unparsed(self, environ: Mapping[str, str] | None = None) -> str | None:
        """The value as set, else the default as written: for an argparse default, which
        argparse parses with the option's type (a bad value is then a usage error)."""
        value = self.raw(environ)
        return self.default if value is None else value

    def get(self, environ: Mapping[str, str] | None = None):
        """The parsed value, else the parsed default, else None."""
        return self._parse(self.raw(environ))

    def pop(self, environ: dict[str, str] | None = None):
        """get(), and the variable removed (so no child process inherits it)."""
        value = self.get(environ)
        (os.environ if environ is None else environ).pop(self.name, None)
        return value

    def _parse(self, raw: str | None):
        if raw is None:
            raw = self.default
            if raw is None:
                return None
        try:
            return self.parse(raw)
        except ValueError as exc:  # the parsers say what they expected
            shown = "" if self.secret else f"={raw!r}"
            raise ValueError(f"{self.name}{shown}: expected {exc}") from None


_you = "you"
_up = "workbench up (for each service it starts)"

VARIABLES: list[Variable] = []  # in the order a reference lists them


def _declare(*fields, **flags) -> Variable:
    variable = Variable(*fields, **flags)
    VARIABLES.append(variable)
    return variable


# -- what you set -----------------------------------------------------------------------------
ALLOWED_HOSTS = _declare(
    "WORKBENCH_ALLOWED_HOSTS",
    words,
    None,
    _you,
    "Host names a loopback app or engine also answers to (comma-separated), beside "
    "localhost and 127.0.0.1; other Host headers are refused (DNS rebinding).",
)

API_KEYS = _declare(
    "WORKBENCH_API_KEYS",
    words,
    None,
    "you, or workbench up from your environment",
    "API keys engines check (comma-separated; with .workbench/api_keys). An engine "
    "removes it from its environment once read; an app that fronts an engine sends the "
    "first.",
    secret=True,
)

AUTH = _declare(
    "WORKBENCH_AUTH",
    login,
    None,
    _you,
    "USER:PASSWORD for apps (as --auth), needed to bind beyond loopback.",
    secret=True,
)

BACKEND = _declare(
    "WORKBENCH_BACKEND",
    text,
    None,
    _you,
    "The tool that builds envs (conda, mamba, micromamba or uv); unset: the first "
    "conda-family tool on PATH, else uv.",
)

CACHE_DIR = _declare(
    "WORKBENCH_CACHE_DIR",
    path,
    None,
    _you,
    "The package cache builds share (beats [project] cache_dir).",
)

CLUSTER_CACHE = _declare(
    "WORKBENCH_CLUSTER_CACHE",
    path,
    None,
    "you, on a node; workbench sets it for Ray tasks",
    "Where cluster nodes keep projects (by commit) and their envs; unset: "
    "$XDG_CACHE_HOME/workbench/cluster.",
)

ENGINE_WAIT_S = _declare(
    "WORKBENCH_ENGINE_WAIT_S",
    seconds,
    "120",
    _you,
    "How long an app that fronts an engine waits for it to be healthy.",
)

GPU_WAIT = _declare(
    "WORKBENCH_GPU_WAIT",
    wait_seconds,
    None,
    _you,
    'Seconds (or "inf") a kernel start may wait for a free GPU; unset: fail at once.',
)

HOST = _declare(
    "WORKBENCH_HOST",
    text,
    "127.0.0.1",
    "you, when running an image",
    "The address an image's services bind; beyond loopback they need a login or keys.",
)

LEASE_DIR = _declare(
    "WORKBENCH_LEASE_DIR",
    path,
    "/var/tmp/workbench-gpu-leases",
    _you,
    "The GPU lease folder every user of the machine shares (1777).",
)

LOG_LEVEL = _declare(
    "WORKBENCH_LOG_LEVEL",
    log_level,
    "INFO",
    _you,
    "Log level of apps, engines and their workers.",
)

STOP_GRACE_S = _declare(
    "WORKBENCH_STOP_GRACE_S",
    seconds,
    "8",
    "you, when running an image",
    "How long an image's launcher waits after SIGTERM before it kills what still runs.",
)

SERVICE_PORT = _declare(
    "WORKBENCH_<NAME>_PORT",
    port,
    None,
    "you, when running an image",
    "The port of the image's service NAME (upper case, other characters as _).",
)

# -- what workbench sets for the processes it starts ------------------------------------------
APP_AUTH = _declare(
    "WORKBENCH_APP_AUTH",
    login,
    None,
    _up + "; an image's launcher",
    "The app runner's login; removed from its environment once read (never in argv).",
    secret=True,
)

APP_NAME = _declare(
    "WORKBENCH_APP_NAME",
    text,
    None,
    "the app runner",
    "The name of the app the process serves, for the app's own code.",
)

ENGINE_KEY = _declare(
    "WORKBENCH_ENGINE_KEY",
    text,
    None,
    _up,
    "The API key an app sends to the engine it fronts (else the first of WORKBENCH_API_KEYS).",
    secret=True,
)

ENGINE_MODEL = _declare(
    "WORKBENCH_ENGINE_MODEL",
    text,
    None,
    _up + "; an image",
    "The model name an app asks the engine it fronts for (the engine's name).",
)

ENGINE_URL = _declare(
    "WORKBENCH_ENGINE_URL",
    text,
    None,
    _up + "; an image",
    "The /v1 URL of the engine an app fronts.",
)

ENV = _declare(
    "WORKBENCH_ENV",
    text,
    None,
    "workbench (kernels, services, images)",
    "The env the process runs in; names it in metrics and run records.",
)

GPUS_ASSIGNED = _declare(
    "WORKBENCH_GPUS_ASSIGNED",
    words,
    None,
    "a Ray task or a sweep slot",
    "The GPUs given to what it starts (comma-separated; empty: none); beats a pin and leases.",
    empty_is_unset=False,
)

LEASE_FOR = _declare(
    "WORKBENCH_LEASE_FOR",
    text,
    None,
    "workbench (kernels of runs and tests)",
    'Who a kernel works for, "KIND NAME", written in its GPU lease.',
)

LOCK_HASH = _declare(
    "WORKBENCH_LOCK_HASH",
    text,
    None,
    "an image",
    "The hash of the env's lock, for an engine's info metric.",
)

MODEL = _declare(
    "WORKBENCH_MODEL",
    text,
    None,
    _up + "; an image",
    "The model folder (or hub id) of an app's `model`.",
)

PROJECT = _declare(
    "WORKBENCH_PROJECT",
    path,
    None,
    "workbench (kernels, services, images)",
    "The project's root folder.",
)

_BY_NAME = {v.name: v for v in VARIABLES}


def declared(name: str) -> Variable | None:
    """The declaration of name, a service's port variable included."""
    found = _BY_NAME.get(name)
    if found is None and re.fullmatch(r"WORKBENCH_[A-Z0-9_]+_PORT", name):
        found = SERVICE_PORT
    return found


def service_port(service: str) -> Variable:
    """WORKBENCH_<NAME>_PORT of one service: the variable that moves its port."""
    name = PREFIX + re.sub(r"[^A-Za-z0-9]", "_", service).upper() + "_PORT"
    return Variable(name, port, None, SERVICE_PORT.set_by, SERVICE_PORT.description)


def reference() -> list[dict[str, object]]:
    """The variables as rows for a docs page: name, default, set_by, description, secret."""
    return [
        {
            "name": v.name,
            "default": v.default,
            "set_by": v.set_by,
            "description": v.description,
            "secret": v.secret,
        }
        for v in VARIABLES
    ]
