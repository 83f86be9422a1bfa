"""The predict task in an engine-core process: a researcher's own model (a handler class in
the project) or a Hugging Face pipeline, run on batches of inputs.

A handler is a file of the project and a class in it (`handler = "serving/digits.py:Model"`):

    class Model:
        inputs = [{"name": "image", "datatype": "FP32", "shape": [8, 8]}]  # optional metadata
        outputs = [{"name": "label", "datatype": "INT64", "shape": [1]}]   # optional metadata
        def setup(self, device): ...         # load the weights once; self.model_path is set
        def preprocess(self, item): ...      # optional, one input
        def predict(self, batch): ...        # a list of inputs -> a list of outputs
        def postprocess(self, output): ...   # optional, one output -> JSON-able data

A pipeline engine serves `transformers.pipeline(task, model=folder)`. Either way every input
is decoded and preprocessed on its own, so a bad input fails only its own request; inputs of
different shapes run in separate batches (text is padded by the pipeline); a batch that fails
is run again input by input, so one input the model refuses fails only its request too.

Importing this module imports neither torch nor transformers: the engine's front uses Media.
"""

from __future__ import annotations

import importlib.util
import io
import logging
import sys
from pathlib import Path
from typing import NamedTuple

from workbench.runtime.engine.failures import Failure

log = logging.getLogger("workbench.engine.core")

TEXT_TASKS = (
    "text-classification",
    "token-classification",
    "zero-shot-classification",
    "fill-mask",
    "feature-extraction",
)
IMAGE_TASKS = ("image-classification", "object-detection")
AUDIO_TASKS = ("audio-classification", "automatic-speech-recognition")
# Pipeline call arguments the engine sets itself.
RESERVED_PARAMS = ("batch_size", "num_workers", "device")
# What a model raises about one input it refuses (anything else is the model's own failure).
INPUT_ERRORS = (ValueError, TypeError, LookupError)


class Media(NamedTuple):
    """An image or a sound as its file's bytes (the front decodes base64, never the file)."""

    kind: str  # "image" or "audio"
    data: bytes


class InputError(Exception):
    """One input cannot run; its request fails with code, the others go on."""

    def __init__(self, code: Failure, message: str):
        super().__init__(message)
        self.code, self.message = code, message


def media_of(task: str) -> str | None:
    """What a pipeline task takes: text, image or audio (None for a handler)."""
    if task in TEXT_TASKS:
        return "text"
    if task in IMAGE_TASKS:
        return "image"
    return "audio" if task in AUDIO_TASKS else None


# -- models, loaded in the zygote --------------------------------------------------------
class Handler:
    """The project's own model class."""

    def __init__(self, spec: str, model_path: str):
        path, _, name = spec.rpartition(":")
        module_name = "workbench_handler_" + Path(path).stem
        loader = importlib.util.spec_from_file_location(module_name, path)
        if loader is None:
            raise ValueError(f"handler {path} is not a Python file")
        module = importlib.util.module_from_spec(loader)
        sys.modules[module_name] = module
        loader.loader.exec_module(module)
        cls = getattr(module, name, None)
        if cls is None:
            raise ValueError(f"handler {path} defines no class {name}")
        self.model = cls()
        self.model.model_path = model_path
        if not callable(getattr(self.model, "predict", None)):
            raise ValueError(f"handler {path}:{name} has no predict(batch) method")
        self.info = {
            "inputs": getattr(self.model, "inputs", None),
            "outputs": getattr(self.model, "outputs", None),
            "media": None,
        }

    def setup(self, device: str) -> None:
        setup = getattr(self.model, "setup", None)
        if setup is not None:
            setup(device)

    def prepare(self, item: object, params: dict) -> object:
        if params:
            raise InputError(Failure.BAD_INPUT, "this model takes no parameters")
        preprocess = getattr(self.model, "preprocess", None)
        return item if preprocess is None else preprocess(item)

    def group(self, item: object) -> object:
        return shape_of(item)

    def infer(self, items: list, params: dict) -> list:
        outputs = list(self.model.predict(items))
        if len(outputs) != len(items):
            raise RuntimeError(f"predict returned {len(outputs)} outputs for {len(items)} inputs")
        return outputs

    def finish(self, output: object) -> object:
        postprocess = getattr(self.model, "postprocess", None)
        return output if postprocess is None else postprocess(output)

    def warm(self) -> None:
        """Nothing to warm with: a handler's inputs are its own."""


class Pipeline:
    """A Hugging Face pipeline of one of the tasks in settings.PIPELINE_TASKS."""

    def __init__(self, task: str, model_path: str):
        from transformers import pipeline
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()
        self.task = task
        self.pipe = pipeline(task, model=model_path, device="cpu")
        self.media = media_of(task)
        self.info = {"inputs": None, "outputs": None, "media": self.media}

    def setup(self, device: str) -> None:
        if device != "cpu":
            import torch

            self.pipe.model.to(device)
            self.pipe.device = torch.device(device)

    def prepare(self, item: object, params: dict) -> object:
        for name in RESERVED_PARAMS:
            if name in params:
                raise InputError(Failure.BAD_INPUT, f"parameter {name} is set by the engine")
        if self.media == "text":
            if not isinstance(item, str):
                raise InputError(Failure.BAD_INPUT, "expected a string")
            return item
        if not isinstance(item, Media) or item.kind != self.media:
            raise InputError(Failure.BAD_INPUT, f"expected an {self.media} (base64 of its file)")
        return decode_image(item.data) if self.media == "image" else decode_audio(item.data)

    def group(self, item: object) -> object:
        """Text is padded together, except for feature extraction (its answer would keep the
        padding); sounds of different lengths and detection images of different sizes run
        apart (their models would see the padding)."""
        if self.task == "feature-extraction":
            return len(self.pipe.tokenizer(item)["input_ids"])
        if self.media == "audio":
            return len(item["raw"]) if isinstance(item, dict) else None
        if self.task == "object-detection":
            return item.size
        return None

    def infer(self, items: list, params: dict) -> list:
        """One output per item, as the pipeline answers a list of them (fill-mask answers a
        list of one as if it were that one input)."""
        outputs = self.pipe(items, batch_size=len(items), **params)
        if self.task == "fill-mask" and len(items) == 1:
            return [outputs]
        return list(outputs)

    def finish(self, output: object) -> object:
        return output

    def warm(self) -> None:
        """One input through the path requests take, so the first request pays no warm-up."""
        params: dict = {}
        if self.media == "text":
            item: object = "warm up"
            if self.task == "zero-shot-classification":
                params = {"candidate_labels": ["a", "b"]}
            elif self.task == "fill-mask":
                item = f"warm {self.pipe.tokenizer.mask_token} up"
        elif self.media == "image":
            from PIL import Image

            item = Image.new("RGB", (32, 32))
        else:
            import numpy

            rate = getattr(self.pipe.feature_extractor, "sampling_rate", 16000)
            item = {"raw": numpy.zeros(rate // 10, dtype=numpy.float32), "sampling_rate": rate}
        self.infer([item], params)


def load(task: str, model_path: str, handler: str):
    """The model of a predict engine, on the CPU: the handler's, or the task's pipeline."""
    if handler:
        return Handler(handler, model_path)
    return Pipeline(task, model_path)


# -- decoding and shapes ------------------------------------------------------------------
def decode_image(data: bytes):
    from PIL import Image

    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except Exception as exc:  # noqa: BLE001 - any undecodable file is this input's fault
        raise InputError(Failure.BAD_INPUT, f"not an image file ({exc})") from None
    return image.convert("RGB")


def decode_audio(data: bytes) -> object:
    """A WAV file as {"raw": float32 samples (mono), "sampling_rate"}; other formats go to the
    pipeline as bytes (it decodes them with ffmpeg, when the env has it)."""
    import wave

    import numpy

    if not data.startswith(b"RIFF"):
        return data
    try:
        with wave.open(io.BytesIO(data)) as sound:
            width, channels = sound.getsampwidth(), sound.getnchannels()
            rate, frames = sound.getframerate(), sound.readframes(sound.getnframes())
    except (wave.Error, EOFError) as exc:
        raise InputError(Failure.BAD_INPUT, f"not a WAV file ({exc})") from None
    if width not in (1, 2, 4):
        raise InputError(Failure.BAD_INPUT, f"WAV samples of {width} bytes (expected 1, 2 or 4)")
    kind = {1: numpy.uint8, 2: numpy.int16, 4: numpy.int32}[width]
    samples = numpy.frombuffer(frames, dtype=kind).astype(numpy.float32)
    if width == 1:
        samples = samples - 128.0
    samples /= float(2 ** (8 * width - 1))
    if channels > 1:
        samples = samples.reshape(-1, channels).mean(axis=1)
    return {"raw": samples, "sampling_rate": rate}


def shape_of(item: object) -> object:
    """A key that equal-shaped inputs share: an array's shape, a nested list's lengths (None
    where ragged), else the type."""
    shape = getattr(item, "shape", None)
    if shape is not None:
        return tuple(shape)
    if isinstance(item, (list, tuple)):
        inner = {shape_of(x) for x in item}
        return (len(item), inner.pop() if len(inner) == 1 else None)
    return type(item).__name__


def jsonable(value: object) -> object:
    """value as JSON data: numpy and torch values become lists and numbers."""
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if hasattr(value, "detach"):  # a torch tensor
        value = value.detach().cpu()
    if hasattr(value, "tolist"):  # numpy arrays and scalars, tensors
        return jsonable(value.tolist())
    raise TypeError(f"an output of type {type(value).__name__} is not JSON data")


# -- batches, in an engine core ----------------------------------------------------------
class Predictor:
    """Runs the requests of a batch: (rid, inputs, params) -> results and failures."""

    def __init__(self, model, max_batch: int):
        self.model, self.max_batch = model, max_batch

    def take(self, pending: list) -> list:
        """The requests of the next batch: the first waiting and those after it with the same
        parameters, at most max_batch inputs (a larger request goes alone)."""
        first = pending[0]
        batch, inputs, rest = [first], len(first[1]), []
        for request in pending[1:]:
            if request[2] == first[2] and inputs + len(request[1]) <= self.max_batch:
                batch.append(request)
                inputs += len(request[1])
            else:
                rest.append(request)
        pending[:] = rest
        return batch

    def run(self, requests: list) -> tuple[list, list]:
        """([(rid, [output, ...]), ...], [(rid, code, message), ...]) for the requests'
        (rid, inputs, params)."""
        failed: dict[str, tuple[str, str]] = {}
        outputs: dict[tuple[str, int], object] = {}
        groups: dict[str, list] = {}
        for rid, inputs, params in requests:
            for i, item in enumerate(inputs):
                try:
                    prepared = self.model.prepare(item, params)
                    key = self.model.group(prepared)
                except InputError as exc:
                    failed.setdefault(rid, (exc.code.value, f"input {i}: {exc.message}"))
                    break
                except Exception as exc:  # noqa: BLE001 - the handler's preprocess refused it
                    failed.setdefault(rid, (Failure.BAD_INPUT.value, f"input {i}: {_why(exc)}"))
                    break
                groups.setdefault(repr(key), []).append((rid, i, prepared))
        params = requests[0][2]  # a batch shares its parameters (take)
        for members in groups.values():
            members = [m for m in members if m[0] not in failed]
            for start in range(0, len(members), self.max_batch):
                chunk = members[start : start + self.max_batch]
                self._run_group(chunk, params, outputs, failed)
        results = []
        for rid, inputs, _ in requests:
            if rid in failed:
                continue
            try:
                answer = [jsonable(self.model.finish(outputs[rid, i])) for i in range(len(inputs))]
            except Exception as exc:  # noqa: BLE001 - postprocess or an output not JSON data
                failed[rid] = (Failure.MODEL_ERROR.value, f"postprocess failed: {_why(exc)}")
                continue
            results.append((rid, answer))
        return results, [(rid, code, message) for rid, (code, message) in failed.items()]

    def _run_group(self, members: list, params: dict, outputs: dict, failed: dict) -> None:
        try:
            answers = self.model.infer([m[2] for m in members], params)
        except Exception as exc:  # noqa: BLE001 - reported to the requests at fault
            if len(members) > 1:  # find the input at fault: each runs alone
                for member in members:
                    self._run_group([member], params, outputs, failed)
                return
            rid, i, _ = members[0]
            if isinstance(exc, INPUT_ERRORS):
                failed.setdefault(rid, (Failure.BAD_INPUT.value, f"input {i}: {_why(exc)}"))
            else:
                log.exception("prediction failed")
                message = f"input {i}: the model failed: {_why(exc)}"
                failed.setdefault(rid, (Failure.MODEL_ERROR.value, message))
            return
        for (rid, i, _), answer in zip(members, answers):
            outputs[rid, i] = answer


def _why(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def device_name(device: str | None) -> str:
    """What setup() is given: "cpu", or "cuda:0" in a core that sees only its own GPU."""
    return "cpu" if device is None else "cuda:0"
