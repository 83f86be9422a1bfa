"""An engine's settings, each declared once (name, type, default, lower bound, help).

Everything else derives from `EngineSettings`: the [engines.NAME] keys of workbench.toml
(workbench.manifest), the engine's command line (workbench.runtime.engine.commandline), the
line the tool builds to start it (workbench.serving.engines.arguments, `argv` here) and the
pool's configuration (workbench.runtime.engine.workers.Settings). So a value the manifest
accepts is one the engine accepts, and the other way round.
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import NamedTuple, Union

# Hugging Face pipeline tasks an engine serves with no code (workbench.runtime.engine.predict).
PIPELINE_TASKS = (
    "text-classification",
    "token-classification",
    "zero-shot-classification",
    "fill-mask",
    "feature-extraction",
    "image-classification",
    "object-detection",
    "audio-classification",
    "automatic-speech-recognition",
)
TASKS = ("auto", "generate", "embed", *PIPELINE_TASKS)
HANDLER = "predict"  # the task of an engine that serves a handler
HANDLER_FORM = (r"[^:]+\.py:[A-Za-z_][A-Za-z0-9_]*", "FILE.py:Class, e.g. serving/digits.py:Model")
Value = Union[int, float, str]


def family(task: str) -> str:
    """The cores' loop a (resolved) task runs: generate, embed or predict."""
    return task if task in ("generate", "embed") else HANDLER


def _setting(
    default: Value,
    help: str,
    low: float | None = None,
    choices: tuple = (),
    form: tuple[str, str] | None = None,
):
    metadata = {"help": help, "low": low, "choices": choices, "form": form}
    return dataclasses.field(default=default, metadata=metadata)


@dataclasses.dataclass(frozen=True)
class EngineSettings:
    """How an engine serves its model; the type of each setting is its default's."""

    task: str = _setting(
        "auto",
        "generate (causal LMs), embed (encoders), a pipeline task, or auto: from the model",
        choices=TASKS,
    )
    handler: str = _setting(
        "", "the project's own model class, FILE.py:Class (instead of a task)", form=HANDLER_FORM
    )
    workers: int = _setting(0, "engine-core processes (0: one, or one per visible GPU)", low=0)
    threads: int = _setting(1, "torch threads per worker", low=1)
    max_batch: int = _setting(32, "requests a worker runs together", low=1)
    max_wait_ms: float = _setting(
        10.0, "most a request waits for batch-mates (adaptive: alone, it waits none)", low=0
    )
    # A request waits in the queue only while every worker is full, so an empty queue (0)
    # would refuse every request that cannot start at once.
    max_queue: int = _setting(64, "requests that may wait for a worker (then 429)", low=1)
    max_requests: int = _setting(0, "recycle a worker after this many requests (0: never)", low=0)
    max_rss_mb: int = _setting(0, "recycle a worker past this resident memory (0: never)", low=0)
    max_tokens: int = _setting(512, "largest max_tokens a request may ask for", low=1)
    max_prompt_tokens: int = _setting(4096, "longest prompt accepted, in tokens", low=1)
    max_body_kb: int = _setting(1024, "largest request body, in KiB", low=1)
    timeout: float = _setting(300.0, "seconds a request may take, queue included", low=0.001)


class Setting(NamedTuple):
    """One field of EngineSettings as data: what the manifest, the parsers and the docs read."""

    name: str
    kind: type  # int, float or str
    default: Value
    low: float | None
    choices: tuple[str, ...]
    help: str
    form: tuple[str, str] | None = None  # (pattern, description) a string must match

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def expected(self) -> str:
        """What a valid value is, in the words every error uses."""
        if self.choices:
            return "expected one of " + ", ".join(self.choices)
        if self.kind is str:
            return "expected " + (self.form[1] if self.form else "a string")
        what = "a whole number" if self.kind is int else "a number"
        return f"expected {what} >= {self.low:g}"

    def check(self, value: object) -> Value:
        """value (as TOML or a parser gives it) as this setting holds it, else ValueError."""
        if self.choices:
            if value not in self.choices:
                raise ValueError(self.expected)
            return str(value)
        if self.kind is str:
            valid = isinstance(value, str) and (
                not value or not self.form or re.fullmatch(self.form[0], value)
            )
            if not valid:
                raise ValueError(self.expected)
            return value
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if (
            not number
            or not math.isfinite(value)
            or (self.kind is int and not isinstance(value, int))
            or (self.low is not None and value < self.low)
        ):
            raise ValueError(self.expected)
        return self.kind(value)

    def parse(self, text: str) -> Value:
        """A command-line value: the same checks as check(), from text."""
        if self.kind is str:
            return self.check(text)
        try:
            value = self.kind(text)
        except ValueError:
            raise ValueError(self.expected) from None
        return self.check(value)

    def render(self, value: Value) -> str:
        return f"{value:g}" if self.kind is float else str(value)


SETTINGS: tuple[Setting, ...] = tuple(
    Setting(
        f.name,
        type(f.default),
        f.default,
        f.metadata["low"],
        f.metadata["choices"],
        f.metadata["help"],
        f.metadata["form"],
    )
    for f in dataclasses.fields(EngineSettings)
)


def argv(settings: EngineSettings) -> list[str]:
    """The engine's command-line options for settings, every one spelled out."""
    line: list[str] = []
    for setting in SETTINGS:
        line += [setting.flag, setting.render(getattr(settings, setting.name))]
    return line
