"""The OpenAI-compatible request bodies an engine accepts and the responses and stream chunks
it writes (https://platform.openai.com/docs/api-reference, legacy completions included).

Parsing turns a request body into a Request (token ids and sampling parameters) or raises
ApiError, whose message names the field and the valid values, as OpenAI's own errors do.
vLLM's extensions `top_k`, `ignore_eos` and `stop_token_ids` are accepted too (the `openai`
client sends them with extra_body=...).
"""

from __future__ import annotations

import base64
import json
import math
import time
import uuid

from workbench.runtime.engine.failures import EngineFailure

# Fields OpenAI defines that this engine does not implement: accepted only at their default.
UNSUPPORTED_DEFAULTS = {
    "n": (None, 1),
    "best_of": (None, 1),
    "echo": (None, False),
    "logprobs": (None, False, 0),
    "top_logprobs": (None, 0),
    "presence_penalty": (None, 0, 0.0),
    "frequency_penalty": (None, 0, 0.0),
    "logit_bias": (None, {}),
    "suffix": (None, ""),
    "tools": (None, []),
    "functions": (None, []),
    "response_format": (None, {"type": "text"}),
}
MAX_STOPS = 4
ROLES = ("system", "developer", "user", "assistant", "tool")


class ApiError(Exception):
    """An error response: HTTP status, OpenAI error type, message, and the field at fault."""

    def __init__(
        self,
        status: int,
        message: str,
        param: str | None = None,
        kind: str = "invalid_request_error",
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.status, self.message, self.param = status, message, param
        self.kind, self.code, self.headers = kind, code, headers or {}

    @classmethod
    def of(cls, failed: EngineFailure) -> ApiError:
        """The response to a request the engine accepted and could not answer."""
        failure = failed.failure
        return cls(
            failure.status, failed.message, None, failure.kind, failure.code, failure.headers
        )

    def body(self) -> bytes:
        error = {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}
        return json.dumps({"error": error}).encode()


class Limits:
    def __init__(self, max_tokens: int, max_prompt_tokens: int, context: int | None, served: str):
        self.max_tokens, self.served = max_tokens, served
        self.context = context or 1 << 30
        self.max_prompt_tokens = min(max_prompt_tokens, self.context - 1)


class Request:
    def __init__(
        self, chat: bool, ids: list[int], params: dict, stream: bool, usage: bool, stop: list
    ):
        self.chat, self.ids, self.params = chat, ids, params
        self.stream, self.include_usage, self.stop = stream, usage, stop
        self.id = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex
        self.created = int(time.time())


def parse_generation(body: object, chat: bool, limits: Limits, tokenizer) -> Request:
    """A /v1/completions or /v1/chat/completions body, checked and tokenized."""
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object")
    _model(body, limits)
    for name, allowed in UNSUPPORTED_DEFAULTS.items():
        if name in body and body[name] not in allowed:
            raise ApiError(400, f"{name} is not supported by this engine (leave it unset)", name)
    if chat:
        ids = _encode(tokenizer.encode_chat, _messages(body.get("messages")), "messages")
    else:
        ids = _prompt(body.get("prompt"), tokenizer)
    if not ids:
        raise ApiError(400, "the prompt is empty", "messages" if chat else "prompt")
    if len(ids) > limits.max_prompt_tokens:
        raise ApiError(
            400,
            f"prompt too long: {len(ids)} tokens (limit {limits.max_prompt_tokens}; the "
            f"model's context is {limits.context} tokens)",
            "messages" if chat else "prompt",
            code="context_length_exceeded",
        )
    room = limits.context - len(ids)
    key = (
        "max_completion_tokens"
        if chat and body.get("max_completion_tokens") is not None
        else "max_tokens"
    )
    requested = body.get(key)
    if requested is None:
        max_tokens = min(limits.max_tokens, room) if chat else min(16, room)
    else:
        max_tokens = _integer(body, key, 1, limits.max_tokens)
    params = {
        "max_tokens": min(max_tokens, room),
        "temperature": _number(body, "temperature", 0.0, 2.0, 1.0),
        "top_p": _number(body, "top_p", 0.0, 1.0, 1.0, open_low=True),
        "top_k": _top_k(body),
        "seed": _seed(body),
        "ignore_eos": _flag(body, "ignore_eos"),
        "stop_token_ids": _token_ids(body, "stop_token_ids"),
    }
    stream = _flag(body, "stream")
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise ApiError(400, "stream_options must be an object", "stream_options")
    usage = bool(stream and options and options.get("include_usage"))
    return Request(chat, ids, params, stream, usage, _stops(body))


def parse_embeddings(body: object, limits: Limits, tokenizer) -> list[list[int]]:
    """A /v1/embeddings body: token ids of each input."""
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object")
    _model(body, limits)
    raw = body.get("input")
    if isinstance(raw, str) or (isinstance(raw, list) and raw and isinstance(raw[0], int)):
        raw = [raw]
    if not isinstance(raw, list) or not raw:
        raise ApiError(400, "input must be a string or a non-empty list of strings", "input")
    if len(raw) > 2048:
        raise ApiError(400, f"input has {len(raw)} items (at most 2048)", "input")
    fmt = body.get("encoding_format", "float")
    if fmt not in ("float", "base64", None):
        raise ApiError(400, "encoding_format must be 'float' or 'base64'", "encoding_format")
    if body.get("dimensions") is not None:
        raise ApiError(400, "dimensions is not supported by this engine", "dimensions")
    inputs = []
    for item in raw:
        ids = _prompt(item, tokenizer, "input")
        if not ids:
            raise ApiError(400, "an input is empty", "input")
        if len(ids) > limits.max_prompt_tokens:
            raise ApiError(
                400,
                f"input too long: {len(ids)} tokens (limit {limits.max_prompt_tokens})",
                "input",
                code="context_length_exceeded",
            )
        inputs.append(ids)
    return inputs


# -- responses ----------------------------------------------------------------------------
class Chunks:
    """The server-sent events of one streamed response, in OpenAI's chunk format."""

    def __init__(self, request: Request, model: str):
        self.request = request
        kind = "chat.completion.chunk" if request.chat else "text_completion"
        self.head = {"id": request.id, "object": kind, "created": request.created, "model": model}
        self.usage_null = request.include_usage

    def _event(self, choice: dict | None, usage: dict | None = None) -> bytes:
        body = dict(self.head)
        if self.request.chat:
            body["system_fingerprint"] = None
        body["choices"] = [] if choice is None else [choice]
        if self.usage_null or usage is not None:
            body["usage"] = usage
        return b"data: " + json.dumps(body, separators=(",", ":")).encode() + b"\n\n"

    def role(self) -> bytes:
        choice = {"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None}
        choice["finish_reason"] = None
        return self._event(choice)

    def text(self, text: str, finish: str | None = None) -> bytes:
        if self.request.chat:
            delta = {"content": text} if text else {}
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        else:
            choice = {"text": text, "index": 0, "logprobs": None, "finish_reason": finish}
        return self._event(choice)

    def usage(self, prompt: int, completion: int) -> bytes:
        return self._event(None, usage_of(prompt, completion))

    @staticmethod
    def error(failed: EngineFailure) -> bytes:
        """The event that ends a stream the engine could not finish."""
        return b"data: " + ApiError.of(failed).body() + b"\n\n"

    DONE = b"data: [DONE]\n\n"


def completion(
    request: Request, model: str, text: str, finish: str, completion_tokens: int
) -> dict:
    """The whole (not streamed) response."""
    usage = usage_of(len(request.ids), completion_tokens)
    if request.chat:
        message = {"role": "assistant", "content": text}
        choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": finish}
        kind = "chat.completion"
    else:
        choice = {"text": text, "index": 0, "logprobs": None, "finish_reason": finish}
        kind = "text_completion"
    body = {"id": request.id, "object": kind, "created": request.created, "model": model}
    if request.chat:
        body["system_fingerprint"] = None
    body.update(choices=[choice], usage=usage)
    return body


def embeddings(model: str, data: bytes, dim: int, tokens: int, fmt: str | None) -> dict:
    import array

    values = array.array("f")
    values.frombytes(data)
    if values.itemsize != 4:
        raise RuntimeError("float32 arrays are not 4 bytes here")
    rows = []
    for i in range(len(values) // dim if dim else 0):
        row = values[i * dim : (i + 1) * dim]
        if fmt == "base64":
            embedding: object = base64.b64encode(row.tobytes()).decode()
        else:
            embedding = row.tolist()
        rows.append({"object": "embedding", "index": i, "embedding": embedding})
    return {"object": "list", "data": rows, "model": model, "usage": usage_of(tokens, None)}


def models(model: str, created: int, root: str) -> dict:
    entry = {"id": model, "object": "model", "created": created, "owned_by": "workbench"}
    entry["root"] = root
    return {"object": "list", "data": [entry]}


def usage_of(prompt: int, completion: int | None) -> dict:
    if completion is None:
        return {"prompt_tokens": prompt, "total_tokens": prompt}
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


# -- fields -------------------------------------------------------------------------------
def _model(body: dict, limits: Limits) -> None:
    model = body.get("model")
    if model != limits.served:
        raise ApiError(
            404,
            f"the model {model!r} does not exist here; this engine serves {limits.served!r}",
            "model",
            code="model_not_found",
        )


def _prompt(value: object, tokenizer, name: str = "prompt") -> list[int]:
    if isinstance(value, list) and len(value) == 1 and isinstance(value[0], (str, list)):
        value = value[0]
    if isinstance(value, str):
        return _encode(tokenizer.encode, value, name)
    if isinstance(value, list) and all(
        isinstance(t, int) and not isinstance(t, bool) for t in value
    ):
        if any(t < 0 or t >= tokenizer.vocab_size for t in value):
            raise ApiError(400, f"{name} holds token ids outside the vocabulary", name)
        return list(value)
    raise ApiError(400, f"{name} must be a string or a list of token ids (one prompt)", name)


def _encode(encode, value: object, name: str) -> list[int]:
    """Token ids, or a 400 for text the tokenizer cannot take (a lone surrogate, a chat
    template that fails on these messages)."""
    try:
        return encode(value)
    except Exception as exc:  # noqa: BLE001 - tokenizers and jinja raise many types
        message = f"{name} cannot be tokenized: {type(exc).__name__}: {exc}"
        raise ApiError(400, message, name) from None


def _messages(value: object) -> list[dict]:
    if not isinstance(value, list) or not value:
        raise ApiError(400, "messages must be a non-empty list", "messages")
    out = []
    for i, message in enumerate(value):
        if not isinstance(message, dict) or message.get("role") not in ROLES:
            raise ApiError(400, f"messages[{i}] needs a role ({', '.join(ROLES)})", "messages")
        content = message.get("content")
        if isinstance(content, list):  # content parts: only text ones
            if not all(isinstance(p, dict) and p.get("type") == "text" for p in content):
                raise ApiError(400, f"messages[{i}]: only text content is supported", "messages")
            content = "".join(str(p.get("text", "")) for p in content)
        if content is None:
            content = ""
        if not isinstance(content, str):
            raise ApiError(400, f"messages[{i}].content must be a string", "messages")
        out.append({"role": message["role"], "content": content})
    return out


def _number(body: dict, name: str, lo: float, hi: float, default: float, open_low=False) -> float:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ApiError(400, f"{name} must be a number, got {value!r}", name)
    if value > hi or value < lo or (open_low and value <= lo):
        low = f"above {lo:g}" if open_low else f"at least {lo:g}"
        raise ApiError(400, f"{name} must be {low} and at most {hi:g}, got {value!r}", name)
    return float(value)


def _integer(body: dict, name: str, lo: int, hi: int) -> int:
    value = body.get(name)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ApiError(400, f"{name} must be a whole number, got {value!r}", name)
    if not lo <= value <= hi:
        raise ApiError(400, f"{name} must be between {lo} and {hi}, got {value}", name)
    return value


def _top_k(body: dict) -> int:
    value = body.get("top_k")
    if value is None or value in (0, -1):
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ApiError(
            400, f"top_k must be a positive whole number (or -1 for all), got {value!r}", "top_k"
        )
    return value


def _seed(body: dict) -> int | None:
    value = body.get("seed")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not -(2**63) <= value < 2**64:
        raise ApiError(400, f"seed must be a whole number, got {value!r}", "seed")
    return value % 2**63


def _flag(body: dict, name: str) -> bool:
    value = body.get(name, False)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise ApiError(400, f"{name} must be true or false, got {value!r}", name)
    return value


def _token_ids(body: dict, name: str) -> list[int]:
    value = body.get(name) or []
    if not isinstance(value, list) or not all(
        isinstance(t, int) and not isinstance(t, bool) for t in value
    ):
        raise ApiError(400, f"{name} must be a list of token ids", name)
    return value


def _stops(body: dict) -> list[str]:
    value = body.get("stop")
    if value is None:
        return []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(s, str) for s in value):
        raise ApiError(400, "stop must be a string or a list of strings", "stop")
    if len(value) > MAX_STOPS:
        raise ApiError(400, f"stop takes at most {MAX_STOPS} strings, got {len(value)}", "stop")
    return [s for s in value if s]
