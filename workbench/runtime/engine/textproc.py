"""Text in, text out, in the engine's front: tokenizing prompts (and chat messages), turning
streamed token ids back into text as they come, and cutting at stop strings.

The front tokenizes and detokenizes so that the engine-core processes only ever see token ids
(vLLM splits the work the same way). It uses the `tokenizers` library straight from the
model's tokenizer.json (imported in milliseconds, unlike transformers' AutoTokenizer, which
imports torch), and transformers only for models that ship no tokenizer.json.
"""

from __future__ import annotations

import json
from pathlib import Path

# Used when the tokenizer has no chat template: one "Role: content" line per message.
FALLBACK_ROLES = {"system": "System", "user": "User", "assistant": "Assistant", "tool": "Tool"}


class Tokenizer:
    def __init__(self, folder: Path):
        import tokenizers

        self.folder = folder
        self.decoders = tokenizers.decoders
        path = folder / "tokenizer.json"
        if path.is_file():
            self.backend = tokenizers.Tokenizer.from_file(str(path))
        else:
            from transformers import AutoTokenizer

            fast = getattr(AutoTokenizer.from_pretrained(str(folder)), "backend_tokenizer", None)
            if fast is None:
                raise ValueError(f"{folder} has no tokenizer.json and no fast tokenizer")
            self.backend = fast
        self.backend.no_padding()
        self.backend.no_truncation()
        config = _json(folder / "tokenizer_config.json")
        self.chat_template = config.get("chat_template")
        self.special = {key: _token_text(config.get(key)) for key in ("bos_token", "eos_token")}

    @property
    def vocab_size(self) -> int:
        return self.backend.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str) -> list[int]:
        return self.backend.encode(text).ids

    def decode(self, ids: list[int]) -> str:
        return self.backend.decode(ids, skip_special_tokens=True)

    def chat_prompt(self, messages: list[dict]) -> tuple[str, bool]:
        """The prompt for chat messages, and whether the template added special tokens
        itself (then encoding must not add them again)."""
        if self.chat_template:
            from jinja2.sandbox import ImmutableSandboxedEnvironment

            env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
            template = env.from_string(self.chat_template)
            text = template.render(messages=messages, add_generation_prompt=True, **self.special)
            return text, True
        lines = [
            f"{FALLBACK_ROLES.get(m['role'], m['role'].title())}: {m['content']}" for m in messages
        ]
        return "\n".join(lines) + "\nAssistant:", False

    def encode_chat(self, messages: list[dict]) -> list[int]:
        text, has_special = self.chat_prompt(messages)
        return self.backend.encode(text, add_special_tokens=not has_special).ids

    def stream(self) -> TextStream:
        return TextStream(self)


class TextStream:
    """Token ids in, text out, one piece at a time: a character split over two tokens comes
    out whole, once its last byte has arrived; at the end, whatever a plain decode of all
    the ids makes of bytes that never completed (U+FFFD), so the pieces add up to it."""

    def __init__(self, tokenizer: Tokenizer):
        self.tokenizer = tokenizer
        self.decoder = tokenizer.decoders.DecodeStream(skip_special_tokens=True)
        self.ids: list[int] = []
        self.text = ""

    def feed(self, ids: list[int]) -> str:
        backend = self.tokenizer.backend
        self.ids += ids
        pieces = "".join(p for p in (self.decoder.step(backend, i) for i in ids) if p)
        self.text += pieces
        return pieces

    def finish(self) -> str:
        whole = self.tokenizer.decode(self.ids)
        return whole[len(self.text) :] if whole.startswith(self.text) else ""


class StopStrings:
    """Cuts streamed text at the first stop string, holding back only a tail that could be
    the start of one, until the next piece shows whether it is."""

    def __init__(self, stops: list[str]):
        self.stops = [s for s in stops if s]
        self.pending = ""

    def feed(self, text: str) -> tuple[str, bool]:
        """(text that can go out now, whether a stop string was found)."""
        if not self.stops:
            return text, False
        self.pending += text
        cut = _first_stop(self.pending, self.stops)
        if cut is not None:
            out, self.pending = self.pending[:cut], ""
            return out, True
        keep = _open_tail(self.pending, self.stops)
        out = self.pending[: len(self.pending) - keep]
        self.pending = self.pending[len(self.pending) - keep :]
        return out, False

    def flush(self) -> str:
        out, self.pending = self.pending, ""
        return out


def _open_tail(text: str, stops: list[str]) -> int:
    """Length of the longest end of text that is the beginning of a stop string."""
    longest = max(len(s) for s in stops) - 1
    for n in range(min(longest, len(text)), 0, -1):
        tail = text[-n:]
        if any(s.startswith(tail) for s in stops):
            return n
    return 0


def _first_stop(text: str, stops: list[str]) -> int | None:
    found = [i for i in (text.find(s) for s in stops) if i >= 0]
    return min(found) if found else None


def _json(path: Path) -> dict:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _token_text(value: object) -> str:
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else ""
