"""The routes a predict engine's clients already speak, on the engine's one request path
(Engine.run_task): each turns a request into a Job of inputs for the cores and their outputs
into the answer its client reads.

- `POST /predict`, the Hugging Face inference shape: `{"inputs": X, "parameters": {...}}`
  answers X's output (a list of outputs when X is a list of a pipeline's texts, images or
  sounds), and `{"instances": [X, ...]}` answers `{"predictions": [Y, ...]}`. Images and sounds
  are base64 of their files (or data: URLs); http(s) URLs are refused: the engine never fetches
  from the network.
- The Open Inference Protocol v2 (KServe, Triton; `tritonclient.http` works unchanged):
  `GET /v2`, `/v2/health/live|ready`, `/v2/models/NAME[/versions/1][/ready]` (metadata) and
  `POST /v2/models/NAME[/versions/1]/infer`, JSON or binary tensors
  (workbench.runtime.engine.inference_protocol). A tensor's first dimension is the batch:
  each row is one input of the model. Its errors are `{"error": "..."}`.
"""

from __future__ import annotations

import base64
import binascii
import json
import uuid
import zlib
from typing import NamedTuple

from workbench import __version__
from workbench.runtime.engine import api
from workbench.runtime.engine import inference_protocol as oip
from workbench.runtime.engine.predict import Media, media_of
from workbench.runtime.engine.responses import JSON, header, json_response, respond
from workbench.runtime.engine.settings import HANDLER, family
from workbench.runtime.engine.tasks import Job

# Inputs in one request (a batch of more is a bulk job: split it across requests).
MAX_INPUTS = 1024
VERSION = "1"  # the one version of the model an engine serves
FETCH_REFUSED = "URLs are refused (the engine never fetches from the network): send the file"

# What each pipeline task takes and gives, as /v2 metadata (per input, no batch dimension).
# Outputs are the keys of the pipeline's own output for one input (lists for its top-k).
_B, _F, _I = "BYTES", "FP32", "INT64"
PIPELINE_OUTPUTS = {
    "text-classification": [("label", _B, []), ("score", _F, [])],
    "token-classification": [
        ("entity", _B, [-1]),
        ("score", _F, [-1]),
        ("index", _I, [-1]),
        ("word", _B, [-1]),
        ("start", _I, [-1]),
        ("end", _I, [-1]),
    ],
    "zero-shot-classification": [("sequence", _B, []), ("labels", _B, [-1]), ("scores", _F, [-1])],
    "fill-mask": [("score", _F, [-1]), ("token", _I, [-1]), ("token_str", _B, [-1])],
    "feature-extraction": [("output", _F, [1, -1, -1])],
    "image-classification": [("label", _B, [-1]), ("score", _F, [-1])],
    "object-detection": [("score", _F, [-1]), ("label", _B, [-1]), ("box", _B, [-1])],
    "audio-classification": [("score", _F, [-1]), ("label", _B, [-1])],
    "automatic-speech-recognition": [("text", _B, [])],
}


# -- inputs, as the cores take them ---------------------------------------------------------
def media(value: object, kind: str, where: str) -> Media:
    """An image or a sound from base64 of its file, a data: URL, or (binary tensor data) the
    file's bytes themselves."""
    if isinstance(value, bytes):
        return Media(kind, value)
    expected = f"expected base64 of an {kind} file, or a data: URL"
    if not isinstance(value, str) or not value:
        raise api.ApiError(400, f"{where}: {_what(value)}, {expected}")
    if value.startswith(("http://", "https://")):
        raise api.ApiError(400, f"{where}: {FETCH_REFUSED} as base64")
    text = value
    if text.startswith("data:"):
        head, comma, text = text.partition(",")
        if not comma or not head.endswith(";base64"):
            raise api.ApiError(400, f"{where}: a data: URL must be data:TYPE;base64,DATA")
    try:
        data = base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise api.ApiError(400, f"{where}: malformed base64 ({exc}); {expected}") from None
    if not data:
        raise api.ApiError(400, f"{where}: an empty file; {expected}")
    return Media(kind, data)


def pipeline_input(value: object, kind: str | None, where: str) -> object:
    """One input of a pipeline task: a string for text, Media for images and sounds."""
    if kind in ("image", "audio"):
        return media(value, kind, where)
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError:
            raise api.ApiError(400, f"{where}: not UTF-8 text") from None
    if not isinstance(value, str):
        raise api.ApiError(400, f"{where}: {_what(value)}, expected a string")
    return value


def _what(value: object) -> str:
    text = json.dumps(value) if not isinstance(value, bytes) else f"{len(value)} bytes"
    return text if len(text) <= 40 else text[:37] + "..."


def _count(n: int, where: str) -> None:
    if n == 0:
        raise api.ApiError(400, f"{where}: no inputs (expected at least one)")
    if n > MAX_INPUTS:
        raise api.ApiError(
            400, f"{where}: {n} inputs in one request (at most {MAX_INPUTS}; send several)"
        )


# -- POST /predict ----------------------------------------------------------------------
class Predict:
    """The Hugging Face inference shape, and TF-Serving/KServe v1 instances."""

    task = HANDLER

    def parse(self, engine, body: object) -> Job:
        if not isinstance(body, dict) or ("inputs" in body) == ("instances" in body):
            raise api.ApiError(
                400,
                'the request body must be {"inputs": X, "parameters": {...}} or '
                '{"instances": [X, ...]}',
            )
        params = body.get("parameters") or {}
        if not isinstance(params, dict):
            raise api.ApiError(400, "parameters: expected an object", "parameters")
        handler = engine.args.task == HANDLER
        if handler and params:
            raise api.ApiError(
                400, "parameters: this engine's model (a handler) takes none", "parameters"
            )
        kind = media_of(engine.args.task)
        if "instances" in body:
            values, shape = body["instances"], "predictions"
            if not isinstance(values, list):
                raise api.ApiError(400, "instances: expected a list of inputs", "instances")
            where = "instances[{}]"
        elif isinstance(body["inputs"], list) and not handler:
            values, shape, where = body["inputs"], "list", "inputs[{}]"
        else:
            values, shape, where = [body["inputs"]], "one", "inputs"
        _count(len(values), where.split("[")[0])
        if handler:
            payload = values
        else:
            payload = [pipeline_input(v, kind, where.format(i)) for i, v in enumerate(values)]
        return Job("pred-" + uuid.uuid4().hex, payload, params, 0, shape)

    async def answer(self, engine, send, stream, job: Job) -> None:
        result = stream.result
        if job.request == "predictions":
            return await json_response(send, 200, {"predictions": result})
        body = result[0] if job.request == "one" else result
        await respond(send, 200, json.dumps(body).encode(), JSON)


# -- POST /v2/models/NAME/infer ------------------------------------------------------------
class InferBody(NamedTuple):
    raw: bytes
    header_length: str | None  # Inference-Header-Content-Length: binary data follows


class InferRequest(NamedTuple):
    id: str
    outputs: list  # the model's declared outputs (inference_protocol.Spec)
    requested: list | None  # names the client asked for (None: all)
    binary: dict  # output name -> as binary data
    binary_default: bool


class Infer:
    """Tensors in, tensors out; each row of the batch dimension is one input of the model."""

    task = HANDLER

    def parse(self, engine, body: InferBody) -> Job:
        try:
            request, binary = oip.split_body(body.raw, body.header_length)
            tensors = oip.parse_inputs(request, binary, MAX_INPUTS, len(body.raw))
            inputs, outputs = model_specs(engine)
            params = _parameters(request, engine.args.task == HANDLER)
            if engine.args.task == HANDLER:
                payload = _handler_inputs(tensors, inputs)
            else:
                payload = _pipeline_inputs(tensors, inputs[0], media_of(engine.args.task))
            wanted = _requested(request)
        except oip.ProtocolError as exc:
            raise api.ApiError(400, str(exc)) from None
        rid = request.get("id")
        rid = rid if isinstance(rid, str) and rid else "infer-" + uuid.uuid4().hex
        default = (request.get("parameters") or {}).get("binary_data_output") is True
        names = [w[0] for w in wanted] if wanted is not None else None
        flags = {name: flag for name, flag in wanted or () if flag is not None}
        job_request = InferRequest(rid, outputs, names, flags, default)
        return Job(rid, payload, params, 0, job_request)

    async def answer(self, engine, send, stream, job: Job) -> None:
        request = job.request
        try:
            tensors = oip.encode_outputs(stream.result, request.outputs, request.requested)
        except oip.ProtocolError as exc:
            raise api.ApiError(400, str(exc)) from None
        binary = [request.binary.get(t[0], request.binary_default) for t in tensors]
        body, head = oip.response(engine.name, request.id, tensors, binary)
        if head is None:
            return await respond(send, 200, body, JSON)
        headers = [(b"inference-header-content-length", str(head).encode())]
        await respond(send, 200, body, b"application/octet-stream", headers)


def model_specs(engine) -> tuple[list, list]:
    """The model's declared inputs and outputs: the handler's attributes, or its pipeline
    task's natural ones. 503 before a worker has loaded the model (a handler's are its own)."""
    task = engine.args.task
    if task != HANDLER:
        kind = media_of(task) or "text"
        outputs = [oip.Spec(*entry) for entry in PIPELINE_OUTPUTS.get(task, ())]
        return [oip.Spec(kind, "BYTES", [])], outputs
    info = engine.pool.info or {}
    if not engine.pool.ready or "inputs" not in info:
        raise api.ApiError(503, "the model is loading; retry when /v2/health/ready answers 200")
    try:
        return oip.specs(info.get("inputs"), "inputs"), oip.specs(info.get("outputs"), "outputs")
    except ValueError as exc:
        raise api.ApiError(500, str(exc), kind="server_error") from None


def _parameters(request: dict, handler: bool) -> dict:
    parameters = request.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise oip.ProtocolError("parameters: expected an object")
    params = {k: v for k, v in parameters.items() if k not in oip.RESERVED_PARAMETERS}
    if handler and params:
        raise oip.ProtocolError(
            f"parameters: {', '.join(params)}: this engine's model (a handler) takes none"
        )
    return params


def _requested(request: dict) -> list | None:
    """[(name, binary_data or None), ...] of the outputs asked for, None for all."""
    outputs = request.get("outputs")
    if outputs is None:
        return None
    if not isinstance(outputs, list) or not all(
        isinstance(o, dict) and isinstance(o.get("name"), str) for o in outputs
    ):
        raise oip.ProtocolError("outputs: expected a list of {name, parameters?}")
    wanted = []
    for entry in outputs:
        flag = (entry.get("parameters") or {}).get("binary_data")
        wanted.append((entry["name"], flag if isinstance(flag, bool) else None))
    return wanted


def _handler_inputs(tensors: list, declared: list) -> list:
    """One input per row: the row itself when the model takes one tensor, else {name: row}."""
    by_name = {t.name: t for t in tensors}
    if declared:
        names = [s.name for s in declared]
        unknown = [n for n in by_name if n not in names]
        if unknown:
            raise oip.ProtocolError(
                f"{oip.where(unknown[0])}: not an input of this model (expected "
                + ", ".join(f"{s.name} {s.datatype} {[-1, *s.shape]}" for s in declared)
                + ")"
            )
        for spec in declared:
            if spec.name not in by_name:
                raise oip.ProtocolError(
                    f"{oip.where(spec.name)}: missing ({spec.datatype} {[-1, *spec.shape]})"
                )
            oip.check_declared(by_name[spec.name], spec)
    else:
        names = list(by_name)
    sizes = {by_name[name].shape[0] if by_name[name].shape else 0 for name in names}
    if len(sizes) > 1:
        raise oip.ProtocolError(f"inputs: their batch dimensions differ ({sorted(sizes)[:4]})")
    _count(sizes.pop(), "inputs")
    rows = {name: oip.items(by_name[name]) for name in names}
    if len(names) == 1:
        return rows[names[0]]
    count = len(rows[names[0]])
    return [{name: rows[name][i] for name in names} for i in range(count)]


def _pipeline_inputs(tensors: list, spec, kind: str | None) -> list:
    """Every element of the one BYTES tensor is one input (shape [N] or [N, 1])."""
    expected = f"{spec.name} BYTES [-1]"
    if len(tensors) != 1 or tensors[0].name != spec.name:
        names = ", ".join(oip.where(t.name) for t in tensors[:3])
        more = f" and {len(tensors) - 3} more" if len(tensors) > 3 else ""
        raise oip.ProtocolError(f"{names}{more}: expected one input {expected}")
    tensor = tensors[0]
    at = oip.where(tensor.name)
    if tensor.datatype != "BYTES":
        raise oip.ProtocolError(f"{at}: datatype {tensor.datatype}, expected BYTES")
    if not tensor.shape:
        raise oip.ProtocolError(f"{at}: shape [], expected [-1]")
    _count(len(tensor.data), "inputs")
    return [pipeline_input(v, kind, f"{at}[{i}]") for i, v in enumerate(tensor.data)]


# -- the /v2 routes ---------------------------------------------------------------------
INFER = Infer()
PREDICT_ENDPOINTS = {"/predict": Predict()}


async def serve_protocol(engine, scope: dict, receive, send) -> None:
    """Answer one /v2 request; its errors as the protocol writes them, {"error": "..."}."""
    route, status = _route(scope["path"]), 500
    try:
        status = await _serve(engine, scope, receive, send)
    except api.ApiError as exc:
        status = exc.status
        headers = [(k.encode(), v.encode()) for k, v in exc.headers.items()]
        body = json.dumps({"error": exc.message}).encode()
        await respond(send, exc.status, body, JSON, headers)
    finally:
        engine.metrics.inc("workbench_engine_requests_total", route=route, status=str(status))


def _route(path: str) -> str:
    """The path as the requests metric labels it: a template, so labels stay few."""
    parts = path.rstrip("/").split("/")[1:]
    if parts[1:2] == ["health"] and parts[2:] in (["live"], ["ready"]):
        return path.rstrip("/")
    if parts[1:2] != ["models"] or len(parts) < 3:
        return "/v2" if parts == ["v2"] else "/v2/(unknown)"
    rest = parts[5:] if parts[3:4] == ["versions"] else parts[3:]
    return "/v2/models/{model}" + "".join("/" + p for p in rest[:1] if p in ("ready", "infer"))


async def _serve(engine, scope: dict, receive, send) -> int:
    """The status answered."""
    method = scope["method"]
    parts = scope["path"].rstrip("/").split("/")[1:]  # ["v2", ...]
    ready = engine.status == "ok"
    if parts[1:] in (["health", "live"], ["health", "ready"]):
        _method(method, "GET")
        status = 200 if parts[2] == "live" or ready else 503
        await json_response(send, status, {parts[2]: status == 200})
        return status
    engine.authorize(scope)
    if parts == ["v2"]:
        _method(method, "GET")
        extensions = ["binary_tensor_data"]
        body = {"name": "workbench", "version": __version__, "extensions": extensions}
        await json_response(send, 200, body)
        return 200
    if len(parts) < 3 or parts[1] != "models":
        raise api.ApiError(404, f"no route {scope['path']}")
    name, rest = parts[2], parts[3:]
    if name != engine.name:
        raise api.ApiError(404, f"no model {name} here (this engine serves {engine.name})")
    if rest[:1] == ["versions"]:
        if len(rest) < 2 or rest[1] != VERSION:
            raise api.ApiError(404, f"model {name} has one version, {VERSION}")
        rest = rest[2:]
    if family(engine.args.task) != HANDLER:
        raise api.ApiError(
            404, f"/v2 serves predict engines; this engine's task is {engine.args.task} (/v1/)"
        )
    if not rest:
        _method(method, "GET")
        await json_response(send, 200, metadata(engine))
        return 200
    if rest == ["ready"]:
        _method(method, "GET")
        status = 200 if ready else 503
        await json_response(send, status, {"name": name, "ready": ready})
        return status
    if rest == ["infer"]:
        _method(method, "POST")
        raw = await engine.read_body(scope, receive)
        raw = _inflate(raw, header(scope, b"content-encoding"), engine.args.max_body_kb * 1024)
        body = InferBody(raw, header(scope, b"inference-header-content-length"))
        return await engine.run_task(scope, receive, send, INFER, body)
    raise api.ApiError(404, f"no route {scope['path']}")


def metadata(engine) -> dict:
    inputs, outputs = model_specs(engine)
    return {
        "name": engine.name,
        "versions": [VERSION],
        "platform": "workbench_" + ("handler" if engine.args.task == HANDLER else "pipeline"),
        "inputs": [oip.tensor_metadata(s) for s in inputs],
        "outputs": [oip.tensor_metadata(s) for s in outputs],
    }


def _method(method: str, allowed: str) -> None:
    if method != allowed:
        raise api.ApiError(405, f"this route takes {allowed}")


def _inflate(raw: bytes, encoding: str | None, limit: int) -> bytes:
    """A gzip or deflate request body (tritonclient's request_compression_algorithm)."""
    if not encoding or encoding == "identity":
        return raw
    if encoding not in ("gzip", "deflate"):
        raise api.ApiError(400, f"Content-Encoding {encoding}: expected gzip or deflate")
    inflater = zlib.decompressobj(31 if encoding == "gzip" else 15)
    try:
        out = inflater.decompress(raw, limit + 1)
    except zlib.error as exc:
        raise api.ApiError(400, f"the {encoding} body does not inflate ({exc})") from None
    if len(out) > limit:
        raise api.ApiError(413, f"request body larger than {limit // 1024} KiB inflated")
    return out
