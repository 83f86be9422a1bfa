"""The Open Inference Protocol v2 codec (workbench.runtime.engine.inference_protocol): request
tensors, JSON and binary, checked against their shape and datatype with one-line errors that
name the input; rows along the batch dimension; outputs stacked into tensors, JSON or binary,
read back by tritonclient's own decoder."""

import json
import math
import struct

import numpy as np
import pytest
from tritonclient.utils import deserialize_bytes_tensor, serialize_byte_tensor

from workbench.runtime.engine import inference_protocol as oip


def parse(*inputs, binary: bytes = b"", max_inputs: int = 8) -> list:
    return oip.parse_inputs({"inputs": list(inputs)}, binary, max_inputs, 1 << 20)


def tensor(name="x", datatype="FP32", shape=(2, 2), data=None, **extra) -> dict:
    data = [1, 2, 3, 4] if data is None else data
    return {"name": name, "datatype": datatype, "shape": list(shape), "data": data, **extra}


def refused(*inputs, binary: bytes = b"", max_inputs: int = 8) -> str:
    with pytest.raises(oip.ProtocolError) as caught:
        parse(*inputs, binary=binary, max_inputs=max_inputs)
    message = str(caught.value)
    assert "\n" not in message and len(message) < 300
    return message


def test_flat_and_nested_data_give_the_same_tensor_and_rows():
    flat = parse(tensor(data=[1, 2, 3, 4]))[0]
    nested = parse(tensor(data=[[1, 2], [3, 4]]))[0]
    assert flat == nested == oip.Tensor("x", "FP32", [2, 2], [1, 2, 3, 4])
    assert oip.items(flat) == [[1, 2], [3, 4]]
    assert oip.items(oip.Tensor("s", "BYTES", [3], ["a", "b", "c"])) == ["a", "b", "c"]
    cube = oip.Tensor("c", "INT64", [2, 1, 2], [1, 2, 3, 4])
    assert oip.items(cube) == [[[1, 2]], [[3, 4]]]


@pytest.mark.parametrize(
    ("entry", "words"),
    [
        (tensor(data=[1, 2, 3]), ['input "x"', "3 elements for shape [2, 2]", "expected 4"]),
        (tensor(data=[[1, 2], [3]]), ['input "x"', "depth 1, expected 2"]),
        (tensor(data=[[1, 2, 3], [4, 5, 6]]), ['input "x"', "expected 2"]),
        (tensor(datatype="FP23"), ['input "x"', 'datatype "FP23"', "BYTES"]),
        (tensor(shape=(2, -1)), ['input "x"', "shape [2, -1]", "whole numbers >= 0"]),
        (tensor(data=[1, "2", 3, 4]), ['input "x"', '"2" in an FP32 tensor', "numbers"]),
        (tensor(datatype="INT32", data=[1, 2.5, 3, 4]), ["2.5 in an INT32", "whole numbers"]),
        (tensor(datatype="UINT8", data=[1, 2, 256, 4]), ["256 is outside UINT8 (0..255)"]),
        (tensor(datatype="INT8", data=[1, -129, 3, 4]), ["-129 is outside INT8"]),
        (tensor(datatype="BOOL", data=[1, 0, 1, 0]), ["1 in a BOOL tensor", "true/false"]),
        (tensor(datatype="BYTES", data=[1, 2, 3, 4]), ["1 in a BYTES tensor", "strings"]),
        (tensor(datatype="INT64", data=[math.nan, 1, 2, 3]), ["NaN in an INT64 tensor"]),
        ({"name": "x", "datatype": "FP32", "shape": [1]}, ['input "x": no data']),
        (tensor(shape=[1] * 33, data=[1]), ["at most 32 whole numbers"]),
        (tensor(shape=[10**9, 0], data=[]), ["shape [1000000000, 0] is larger than the request"]),
        (tensor(name="n" * 5000, data=[1]), ['input "nnnnnnnn', "nnn...: 1 elements"]),
        ({"shape": [1]}, ["inputs[0]: expected {name, shape, datatype, data}"]),
    ],
)
def test_a_bad_tensor_is_refused_in_one_line_naming_it(entry, words):
    message = refused(entry)
    for word in words:
        assert word in message


def test_too_many_tensors_or_a_twice_named_one_are_refused():
    assert "10000 tensors (at most 8)" in refused(*[tensor(name=f"t{i}") for i in range(10000)])
    assert 'input "x": given twice' in refused(tensor(), tensor())
    with pytest.raises(oip.ProtocolError, match="inputs: expected a list"):
        oip.parse_inputs({"inputs": []}, b"", 8, 100)


@pytest.mark.parametrize(
    ("datatype", "values"),
    [
        ("BOOL", [True, False, True]),
        ("INT8", [-128, 0, 127]),
        ("UINT16", [0, 1, 65535]),
        ("INT64", [-(2**63), 0, 2**63 - 1]),
        ("FP16", [0.5, -2.0, 1024.0]),
        ("FP32", [0.25, -1.5, 3.0]),
        ("FP64", [0.1, math.inf, -1e300]),
        ("BF16", [1.0, -2.5, 0.15625]),
    ],
)
def test_binary_tensors_decode_as_numpy_and_tritonclient_encode_them(datatype, values):
    if datatype == "BF16":  # numpy has no bfloat16: its bytes are the top half of an FP32
        words = np.array(values, dtype=np.float32).view(np.uint32) >> 16
        raw = words.astype(np.uint16).tobytes()
    else:
        dtype = {"BOOL": np.bool_, "FP16": np.float16}.get(datatype, datatype.lower())
        raw = np.array(
            values, dtype=dtype.replace("fp", "float") if isinstance(dtype, str) else dtype
        ).tobytes()
    entry = {
        "name": "x",
        "datatype": datatype,
        "shape": [3],
        "parameters": {"binary_data_size": len(raw)},
    }
    assert parse(entry, binary=raw)[0].data == values
    assert oip.to_binary(datatype, values) == raw


def test_binary_bytes_tensors_round_trip_through_tritonclients_codec():
    elements = np.array([b"caf\xc3\xa9", b"\x89PNG\r\n", b""], dtype=np.object_)
    raw = serialize_byte_tensor(elements).item()
    entry = {
        "name": "s",
        "datatype": "BYTES",
        "shape": [3],
        "parameters": {"binary_data_size": len(raw)},
    }
    assert parse(entry, binary=raw)[0].data == list(elements)
    encoded = oip.to_binary("BYTES", ["café", "x"])
    assert deserialize_bytes_tensor(encoded).tolist() == ["café".encode(), b"x"]


def test_bad_binary_data_is_refused():
    floats = struct.pack("<3f", 1, 2, 3)
    size = {"binary_data_size": 12}
    entry = {"name": "x", "datatype": "FP32", "shape": [4], "parameters": size}
    assert "12 bytes of binary data, expected 16" in refused(entry, binary=floats)
    entry["parameters"] = {"binary_data_size": 40}
    assert "binary_data_size 40" in refused(entry, binary=floats)
    entry = {"name": "x", "datatype": "FP32", "shape": [2], "parameters": {"binary_data_size": 8}}
    assert "4 bytes of binary data after" in refused(entry, binary=floats)
    cut = struct.pack("<I", 100) + b"abc"
    entry = {"name": "s", "datatype": "BYTES", "shape": [1], "parameters": {"binary_data_size": 7}}
    assert "100 bytes runs past its data" in refused(entry, binary=cut)


def test_split_body_reads_the_json_header_and_refuses_a_bad_length():
    head = json.dumps({"inputs": []}).encode()
    assert oip.split_body(head + b"\x01\x02", str(len(head))) == ({"inputs": []}, b"\x01\x02")
    assert oip.split_body(head, None) == ({"inputs": []}, b"")
    with pytest.raises(oip.ProtocolError, match="Inference-Header-Content-Length '99'"):
        oip.split_body(head, "99")
    with pytest.raises(oip.ProtocolError, match="not valid JSON"):
        oip.split_body(b"{", None)


def test_a_declared_input_checks_datatype_and_shape_after_the_batch_dimension():
    spec = oip.Spec("image", "FP32", [8, 8])
    oip.check_declared(oip.Tensor("image", "FP32", [3, 8, 8], []), spec)
    with pytest.raises(oip.ProtocolError, match=r"shape \[3, 8\], expected \[-1, 8, 8\]"):
        oip.check_declared(oip.Tensor("image", "FP32", [3, 8], []), spec)
    with pytest.raises(oip.ProtocolError, match="datatype FP64, expected FP32"):
        oip.check_declared(oip.Tensor("image", "FP64", [3, 8, 8], []), spec)
    oip.check_declared(oip.Tensor("x", "FP32", [2, 5], []), oip.Spec("x", "FP32", [-1]))
    assert oip.tensor_metadata(spec) == {"name": "image", "datatype": "FP32", "shape": [-1, 8, 8]}


def test_a_handlers_malformed_metadata_is_named():
    assert oip.specs([{"name": "x", "datatype": "INT8", "shape": [2]}], "inputs") == [
        oip.Spec("x", "INT8", [2])
    ]
    with pytest.raises(ValueError, match=r"the handler's outputs\[0\] is"):
        oip.specs([{"name": "y", "datatype": "float"}], "outputs")


def test_outputs_stack_per_name_with_declared_types_and_shapes():
    results = [{"label": 3, "scores": [0.5, 0.5]}, {"label": 7, "scores": [0.25, 0.75]}]
    declared = [oip.Spec("label", "INT64", [1]), oip.Spec("scores", "FP32", [2])]
    assert oip.encode_outputs(results, declared, None) == [
        ("label", "INT64", [2, 1], [3, 7]),
        ("scores", "FP32", [2, 2], [0.5, 0.5, 0.25, 0.75]),
    ]
    assert oip.encode_outputs(results, declared, ["scores"])[0][0] == "scores"
    with pytest.raises(oip.ProtocolError, match='output "probs": not an output'):
        oip.encode_outputs(results, declared, ["probs"])


def test_undeclared_outputs_take_their_natural_types_and_ragged_ones_go_as_json():
    top = [[{"label": "a", "score": 0.5}, {"label": "b", "score": 0.25}]] * 2
    assert oip.encode_outputs(top, [], None) == [
        ("label", "BYTES", [2, 2], ["a", "b", "a", "b"]),
        ("score", "FP32", [2, 2], [0.5, 0.25, 0.5, 0.25]),
    ]
    assert oip.encode_outputs([[1, 2], [3, 4]], [], None) == [
        ("output", "INT64", [2, 2], [1, 2, 3, 4])
    ]
    ragged = [{"tokens": [1, 2]}, {"tokens": [1]}]
    assert oip.encode_outputs(ragged, [], None) == [("tokens", "BYTES", [2], ["[1, 2]", "[1]"])]
    boxes = [{"box": {"xmin": 1}}]
    assert oip.encode_outputs(boxes, [], None) == [("box", "BYTES", [1], ['{"xmin": 1}'])]


def test_a_binary_response_decodes_as_tritonclient_reads_it():
    tensors = [
        ("y", "FP32", [2], [1.5, 2.5]),
        ("t", "BYTES", [1], ["hi"]),
        ("n", "INT64", [1], [4]),
    ]
    body, head = oip.response("m", "r1", tensors, [True, True, False])
    meta = json.loads(body[:head])
    assert meta["model_name"] == "m" and meta["id"] == "r1"
    y, t, n = meta["outputs"]
    assert n == {"name": "n", "datatype": "INT64", "shape": [1], "data": [4]}
    buffer = body[head:]
    size = y["parameters"]["binary_data_size"]
    assert np.frombuffer(buffer[:size], dtype=np.float32).tolist() == [1.5, 2.5]
    assert deserialize_bytes_tensor(buffer[size:]).tolist() == [b"hi"]
    body, head = oip.response("m", "r1", tensors[:1], [False])
    assert head is None and json.loads(body)["outputs"][0]["data"] == [1.5, 2.5]
