"""The Open Inference Protocol v2 (KServe, Triton) as data: request tensors in, response
tensors out, model metadata (https://github.com/kserve/open-inference-protocol).

A request's inputs are `{name, shape, datatype, data}` with data flat or nested (checked
against the shape, element by element against the datatype), or, with the binary tensor
extension that tritonclient uses by default, `parameters.binary_data_size` bytes after a JSON
header of `Inference-Header-Content-Length` bytes. A tensor's first dimension is the batch:
`items` splits it into the inputs the model takes one by one. Outputs go the other way: each
input's output (JSON data) is cut into named columns and stacked into one tensor per name,
as JSON or binary as the request asks. Standard library only: the front may have no numpy.
"""

from __future__ import annotations

import json
import math
import struct
from typing import Any, NamedTuple

# datatype -> (struct code of one element in binary data, what its JSON elements are)
DATATYPES = {
    "BOOL": ("?", "bool"),
    "INT8": ("b", "int"),
    "INT16": ("h", "int"),
    "INT32": ("i", "int"),
    "INT64": ("q", "int"),
    "UINT8": ("B", "int"),
    "UINT16": ("H", "int"),
    "UINT32": ("I", "int"),
    "UINT64": ("Q", "int"),
    "FP16": ("e", "float"),
    "FP32": ("f", "float"),
    "FP64": ("d", "float"),
    "BF16": ("", "float"),  # binary: the top half of an FP32
    "BYTES": ("", "bytes"),  # binary: each element a 4-byte little-endian length, then its bytes
}
EXPECTED_DATATYPES = ", ".join(DATATYPES)
MAX_RANK = 32  # dimensions of a tensor
# Request parameters the protocol or tritonclient reserve (not the model's).
RESERVED_PARAMETERS = (
    "binary_data_output",
    "sequence_id",
    "sequence_start",
    "sequence_end",
    "priority",
    "timeout",
)


class ProtocolError(ValueError):
    """A request the protocol refuses; its message is the one-line answer (status 400)."""


class Tensor(NamedTuple):
    name: str
    datatype: str
    shape: list[int]
    data: list  # flat, row-major; BYTES elements: str from JSON, bytes from binary data


class Spec(NamedTuple):
    """A declared input or output: name, datatype and shape of ONE input (no batch dim)."""

    name: str
    datatype: str
    shape: list[int]  # -1 for a variable dimension


# -- metadata -----------------------------------------------------------------------------
def specs(declared: object, what: str) -> list[Spec]:
    """A handler's `inputs` or `outputs` attribute as Specs; ValueError naming what is
    wrong (the handler's mistake, not the client's)."""
    if declared is None:
        return []
    if not isinstance(declared, (list, tuple)):
        raise ValueError(f"the handler's {what} must be a list of {{name, datatype, shape}}")
    out = []
    for i, entry in enumerate(declared):
        ok = (
            isinstance(entry, dict)
            and isinstance(entry.get("name"), str)
            and isinstance(entry.get("datatype"), str)
            and entry["datatype"] in DATATYPES
            and isinstance(entry.get("shape", []), (list, tuple))
            and all(_is_int(d) and d >= -1 for d in entry.get("shape", []))
        )
        if not ok:
            raise ValueError(
                f"the handler's {what}[{i}] is {entry!r}: expected {{name: str, datatype: one "
                f"of {EXPECTED_DATATYPES}, shape: [int or -1, ...]}}"
            )
        out.append(Spec(entry["name"], entry["datatype"], list(entry.get("shape", []))))
    return out


def tensor_metadata(spec: Spec) -> dict:
    """As GET /v2/models/NAME lists it: the batch dimension (-1) first."""
    return {"name": spec.name, "datatype": spec.datatype, "shape": [-1, *spec.shape]}


# -- requests -----------------------------------------------------------------------------
def split_body(raw: bytes, header_length: str | None) -> tuple[dict, bytes]:
    """The JSON header of an infer request and the binary data after it."""
    if header_length is None:
        head, rest = raw, b""
    else:
        if not header_length.isdecimal() or int(header_length) > len(raw):
            raise ProtocolError(
                f"Inference-Header-Content-Length {header_length!r}: expected the length of "
                f"the JSON header, at most the body's {len(raw)} bytes"
            )
        head, rest = raw[: int(header_length)], raw[int(header_length) :]
    try:
        body = json.loads(head)
    except (ValueError, RecursionError):
        raise ProtocolError("the request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise ProtocolError("the request body must be a JSON object with inputs")
    return body, rest


def parse_inputs(body: dict, binary: bytes, max_inputs: int, size: int) -> list[Tensor]:
    """The request's input tensors, each checked; ProtocolError naming the input at fault.
    size: the request's bytes, more than any of its tensors can hold elements (a shape with
    a zero dimension holds none, but its rows would still be made)."""
    inputs = body.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise ProtocolError("inputs: expected a list of {name, shape, datatype, data}")
    if len(inputs) > max_inputs:
        raise ProtocolError(f"inputs: {len(inputs)} tensors (at most {max_inputs})")
    tensors, offset, names = [], 0, set()
    for i, entry in enumerate(inputs):
        tensor, offset = _parse_tensor(entry, i, binary, offset, size)
        if tensor.name in names:
            raise ProtocolError(f"{where(tensor.name)}: given twice")
        names.add(tensor.name)
        tensors.append(tensor)
    if offset != len(binary):
        raise ProtocolError(
            f"{len(binary) - offset} bytes of binary data after the inputs' binary_data_size "
            f"({offset} bytes)"
        )
    return tensors


def where(name: str) -> str:
    """An input as errors name it (a long name cut short)."""
    return "input " + _show(name)


def _parse_tensor(
    entry: object, index: int, binary: bytes, offset: int, size_limit: int
) -> tuple[Tensor, int]:
    if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
        raise ProtocolError(f"inputs[{index}]: expected {{name, shape, datatype, data}}")
    name = entry["name"]
    at = where(name)
    datatype = entry.get("datatype")
    if not isinstance(datatype, str) or datatype not in DATATYPES:
        raise ProtocolError(
            f"{at}: datatype {_show(datatype)}, expected one of {EXPECTED_DATATYPES}"
        )
    shape = entry.get("shape")
    if (
        not isinstance(shape, list)
        or len(shape) > MAX_RANK
        or not all(_is_int(d) and d >= 0 for d in shape)
    ):
        raise ProtocolError(
            f"{at}: shape {_show(shape)}, expected a list of at most {MAX_RANK} whole numbers >= 0"
        )
    if math.prod(max(d, 1) for d in shape) > max(size_limit, 1):
        raise ProtocolError(f"{at}: shape {shape} is larger than the request could carry")
    count = math.prod(shape)
    parameters = entry.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise ProtocolError(f"{at}: parameters must be an object")
    size = parameters.get("binary_data_size")
    if size is not None:
        if not _is_int(size) or size < 0 or offset + size > len(binary):
            raise ProtocolError(
                f"{at}: binary_data_size {_show(size)}, expected at most the "
                f"{len(binary) - offset} bytes of binary data left"
            )
        data = _from_binary(binary[offset : offset + size], datatype, count, at)
        return Tensor(name, datatype, shape, data), offset + size
    if "data" not in entry:
        raise ProtocolError(f"{at}: no data (expected data, or binary_data_size)")
    data = _flatten(entry["data"], shape, at)
    if len(data) != count:
        raise ProtocolError(f"{at}: {len(data)} elements for shape {shape} (expected {count})")
    check = _ELEMENT_CHECKS[DATATYPES[datatype][1]]
    for element in data:
        check(element, datatype, at)
    if datatype != "BOOL" and DATATYPES[datatype][1] == "int":
        _check_range(data, datatype, at)
    return Tensor(name, datatype, shape, data), offset


def _flatten(data: object, shape: list[int], at: str) -> list:
    """Flat data as is; nested data must follow the shape exactly."""
    if not isinstance(data, list):
        data = [data]
    if not any(isinstance(e, list) for e in data):
        return data
    flat: list = []

    def walk(value: object, depth: int) -> None:
        if depth == len(shape):
            if isinstance(value, list):
                raise ProtocolError(f"{at}: data nested deeper than its shape {shape}")
            flat.append(value)
            return
        if not isinstance(value, list) or len(value) != shape[depth]:
            got = len(value) if isinstance(value, list) else "a scalar"
            raise ProtocolError(
                f"{at}: data has {got} at depth {depth}, expected {shape[depth]} "
                f"(its shape is {shape})"
            )
        for inner in value:
            walk(inner, depth + 1)

    walk(data, 0)
    return flat


def _check_bool(element: object, datatype: str, at: str) -> None:
    if not isinstance(element, bool):
        raise ProtocolError(f"{at}: {_show(element)} in a BOOL tensor (expected true/false)")


def _check_int(element: object, datatype: str, at: str) -> None:
    if not _is_int(element):
        raise ProtocolError(
            f"{at}: {_show(element)} in an {datatype} tensor (expected whole numbers)"
        )


def _check_float(element: object, datatype: str, at: str) -> None:
    if isinstance(element, bool) or not isinstance(element, (int, float)):
        raise ProtocolError(f"{at}: {_show(element)} in an {datatype} tensor (expected numbers)")


def _check_bytes(element: object, datatype: str, at: str) -> None:
    if not isinstance(element, str):
        raise ProtocolError(f"{at}: {_show(element)} in a BYTES tensor (expected strings)")


_ELEMENT_CHECKS = {
    "bool": _check_bool,
    "int": _check_int,
    "float": _check_float,
    "bytes": _check_bytes,
}


def _check_range(data: list, datatype: str, at: str) -> None:
    bits = struct.calcsize(DATATYPES[datatype][0]) * 8
    low, high = (
        (0, 2**bits - 1) if datatype.startswith("U") else (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
    )
    for element in data:
        if not low <= element <= high:
            raise ProtocolError(f"{at}: {element} is outside {datatype} ({low}..{high})")


def _from_binary(chunk: bytes, datatype: str, count: int, at: str) -> list:
    if datatype == "BYTES":
        out, at = [], 0
        while at < len(chunk):
            if at + 4 > len(chunk):
                raise ProtocolError(f"{at}: BYTES data cut inside an element's length")
            (length,) = struct.unpack_from("<I", chunk, at)
            if at + 4 + length > len(chunk):
                raise ProtocolError(f"{at}: a BYTES element of {length} bytes runs past its data")
            out.append(bytes(chunk[at + 4 : at + 4 + length]))
            at += 4 + length
        if len(out) != count:
            raise ProtocolError(f"{at}: {len(out)} BYTES elements for {count} in its shape")
        return out
    width = 2 if datatype == "BF16" else struct.calcsize(DATATYPES[datatype][0])
    if len(chunk) != count * width:
        raise ProtocolError(
            f"{at}: {len(chunk)} bytes of binary data, expected {count * width} "
            f"({count} {datatype} elements)"
        )
    if datatype == "BF16":
        halves = struct.unpack(f"<{count}H", chunk)
        return list(
            struct.unpack(f"<{count}f", struct.pack(f"<{count}I", *(h << 16 for h in halves)))
        )
    if datatype == "BOOL":
        return [b != 0 for b in chunk]
    return list(struct.unpack(f"<{count}{DATATYPES[datatype][0]}", chunk))


def check_declared(tensor: Tensor, spec: Spec) -> None:
    """The tensor is a batch of the declared input: its datatype, its shape after the batch
    dimension (-1 matches any size)."""
    at = where(tensor.name)
    if tensor.datatype != spec.datatype:
        raise ProtocolError(
            f"{at}: datatype {tensor.datatype}, expected {spec.datatype} (the model's metadata)"
        )
    expected = [-1, *spec.shape]
    fits = len(tensor.shape) == len(expected) and all(
        want in (-1, got) for got, want in zip(tensor.shape, expected)
    )
    if not fits:
        raise ProtocolError(
            f"{at}: shape {tensor.shape}, expected {expected} (a batch of {spec.shape})"
        )


def items(tensor: Tensor) -> list:
    """The tensor cut along its first (batch) dimension: one nested list (or scalar) each."""
    if not tensor.shape:
        raise ProtocolError(
            f"{where(tensor.name)}: shape [], expected a batch dimension first (e.g. [1, ...])"
        )
    batch, rest = tensor.shape[0], tensor.shape[1:]
    size = math.prod(rest)
    return [nest(tensor.data[i * size : (i + 1) * size], rest) for i in range(batch)]


def nest(flat: list, shape: list[int]) -> object:
    """Flat row-major data as nested lists of shape (a scalar for shape [])."""
    if not shape:
        return flat[0]
    if len(shape) == 1:
        return list(flat)
    step = math.prod(shape[1:])
    return [nest(flat[i * step : (i + 1) * step], shape[1:]) for i in range(shape[0])]


# -- responses ----------------------------------------------------------------------------
def columns(output: object, names: list[str]) -> dict[str, object]:
    """One input's output cut into named values: a dict's keys, the keys of a list of dicts
    (each a list), else the whole output under the one declared name (or "output")."""
    if isinstance(output, dict):
        return dict(output)
    if isinstance(output, list) and output and all(isinstance(o, dict) for o in output):
        keys = list(output[0])
        if all(list(o) == keys for o in output):
            return {k: [o[k] for o in output] for k in keys}
    return {names[0] if len(names) == 1 else "output": output}


def encode_outputs(
    results: list, declared: list[Spec], requested: list[str] | None
) -> list[tuple[str, str, list[int], list]]:
    """(name, datatype, shape, flat data) of each output tensor, one row per input stacked
    along the batch dimension. A value that is no regular tensor of numbers, booleans or
    strings (or differs in shape between inputs) goes as a BYTES tensor of JSON texts."""
    names = [s.name for s in declared]
    per_input = [columns(r, names) for r in results]
    order = names + [k for k in per_input[0] if k not in names] if per_input else names
    present = [n for n in order if per_input and all(n in c for c in per_input)]
    if requested is not None:
        unknown = [n for n in requested if n not in present]
        if unknown:
            raise ProtocolError(
                f'output "{unknown[0]}": not an output of this model (expected one of '
                f"{', '.join(present) or 'none'})"
            )
        present = requested
    specs_by_name = {s.name: s for s in declared}
    return [_stack(n, [c[n] for c in per_input], specs_by_name.get(n)) for n in present]


def _stack(name: str, values: list, spec: Spec | None) -> tuple[str, str, list[int], list]:
    shaped = [_shape_and_flat(v) for v in values]
    shapes = {tuple(s) for s, _ in shaped if s is not None}
    if len(shapes) == 1 and all(s is not None for s, _ in shaped):
        shape = list(shapes.pop())
        flat = [x for _, f in shaped for x in f]
        datatype = _datatype_of(flat, spec)
        if datatype is not None:
            if (
                spec is not None
                and -1 not in spec.shape
                and math.prod(spec.shape) == math.prod(shape)
            ):
                shape = list(spec.shape)  # e.g. a scalar label declared as shape [1]
            return name, datatype, [len(values), *shape], flat
    texts = [json.dumps(v) for v in values]
    return name, "BYTES", [len(values)], texts


def _shape_and_flat(value: object) -> tuple[list[int] | None, list]:
    """A regular nested list's shape and elements; (None, []) for anything else."""
    if not isinstance(value, list):
        if isinstance(value, (bool, int, float, str)):
            return [], [value]
        return None, []
    parts = [_shape_and_flat(v) for v in value]
    if any(s is None for s, _ in parts) or len({tuple(s) for s, _ in parts}) > 1:
        return None, []
    inner = parts[0][0] if parts else []
    return [len(value), *inner], [x for _, f in parts for x in f]


def _datatype_of(flat: list, spec: Spec | None) -> str | None:
    """The declared datatype when the elements fit it, else what they are (floats as FP32,
    what models compute in); None for a mix."""
    kinds = {"bool" if isinstance(x, bool) else type(x).__name__ for x in flat}
    if kinds == {"str"}:
        return "BYTES" if spec is None or spec.datatype == "BYTES" else None
    if kinds and kinds <= {"bool"}:
        return "BOOL" if spec is None or spec.datatype == "BOOL" else None
    if kinds and kinds <= {"int", "float"}:
        declared = DATATYPES[spec.datatype][1] if spec is not None else None
        if declared == "float" or (declared == "int" and kinds == {"int"}):
            return spec.datatype
        return "INT64" if kinds == {"int"} else "FP32"
    return "FP32" if not kinds else None


def to_binary(datatype: str, flat: list) -> bytes:
    """Elements as the binary tensor extension carries them (little-endian)."""
    if datatype == "BYTES":
        data = [x.encode("utf-8", "replace") for x in flat]
        return b"".join(struct.pack("<I", len(x)) + x for x in data)
    if datatype == "BF16":
        words = struct.unpack(f"<{len(flat)}I", struct.pack(f"<{len(flat)}f", *flat))
        return struct.pack(f"<{len(flat)}H", *(w >> 16 for w in words))
    return struct.pack(f"<{len(flat)}{DATATYPES[datatype][0]}", *flat)


def response(
    model: str,
    rid: str,
    tensors: list[tuple[str, str, list[int], list]],
    binary: list[bool],
) -> tuple[bytes, int | None]:
    """The infer response body, and the length of its JSON header when binary data follows."""
    outputs: list[dict[str, Any]] = []
    chunks = []
    for (name, datatype, shape, flat), as_binary in zip(tensors, binary):
        entry: dict[str, Any] = {"name": name, "datatype": datatype, "shape": shape}
        if as_binary:
            chunk = to_binary(datatype, flat)
            entry["parameters"] = {"binary_data_size": len(chunk)}
            chunks.append(chunk)
        else:
            entry["data"] = flat
        outputs.append(entry)
    body = {"model_name": model, "model_version": "1", "id": rid, "outputs": outputs}
    head = json.dumps(body, allow_nan=True).encode()
    if not chunks:
        return head, None
    return head + b"".join(chunks), len(head)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _show(value: object) -> str:
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."
