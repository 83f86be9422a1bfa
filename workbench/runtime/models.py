"""Model references, as workbench.toml, engines and apps take them: a folder (relative to the
project root), pkg:PACKAGE/sub/folder (a folder inside an installed package, found without
importing it) or hf:ORG/NAME (a Hugging Face hub snapshot, from the local cache or downloaded
when online). A model folder is one with a config.json.

The tool checks a project folder before it starts anything; the engine, in the model's env,
resolves every form. Both read the forms from here.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

PACKAGE_PREFIX = "pkg:"
HUB_PREFIX = "hf:"
CONFIG = "config.json"


def is_folder(raw: str) -> bool:
    """Whether raw names a folder of the file system (not a package's or the hub's)."""
    return not raw.startswith((PACKAGE_PREFIX, HUB_PREFIX))


def is_model_folder(folder: Path) -> bool:
    return (folder / CONFIG).is_file()


def resolve(raw: str, root: Path) -> Path:
    """The model folder raw names; ValueError when it has no config.json or its package is
    not installed here."""
    if raw.startswith(HUB_PREFIX):
        from huggingface_hub import snapshot_download

        folder = Path(snapshot_download(raw[len(HUB_PREFIX) :]))
    elif raw.startswith(PACKAGE_PREFIX):
        package, _, sub = raw[len(PACKAGE_PREFIX) :].partition("/")
        spec = importlib.util.find_spec(package) if package else None
        if spec is None or not spec.submodule_search_locations:
            raise ValueError(f"model {raw}: package {package!r} is not installed in this env")
        folder = Path(list(spec.submodule_search_locations)[0]) / sub
    else:
        folder = Path(raw).expanduser()
        if not folder.is_absolute():
            folder = root / folder
    if not is_model_folder(folder):
        raise ValueError(f"model folder {folder} not found (no {CONFIG} there)")
    return folder.resolve()


# The pipeline task an architecture's name says (config.json's "architectures").
HEAD_TASKS = (
    ("ForSequenceClassification", "text-classification"),
    ("ForTokenClassification", "token-classification"),
    ("ForMaskedLM", "fill-mask"),
    ("ForImageClassification", "image-classification"),
    ("ForObjectDetection", "object-detection"),
    ("ForAudioClassification", "audio-classification"),
    ("ForCTC", "automatic-speech-recognition"),
    ("ForSpeechSeq2Seq", "automatic-speech-recognition"),
)


def detect_task(folder: Path) -> str:
    """generate for causal language models, a pipeline task where the architecture's head
    names one (zero-shot-classification for a sequence classifier trained on entailment),
    embed for other encoders."""
    try:
        config = json.loads((folder / CONFIG).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "generate"
    architectures = config.get("architectures") or []
    if any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in architectures):
        return "generate"
    for head, task in HEAD_TASKS:
        if any(a.endswith(head) for a in architectures):
            if task == "text-classification":
                return _sequence_task(folder, config)
            return task
    return "generate" if config.get("is_decoder") else "embed"


def _sequence_task(folder: Path, config: dict) -> str:
    """A sequence classifier of sounds (its preprocessor is a feature extractor), of
    entailment (zero-shot), or of text."""
    try:
        preprocessor = json.loads((folder / "preprocessor_config.json").read_text("utf-8"))
    except (OSError, ValueError):
        preprocessor = {}
    if isinstance(preprocessor, dict) and "feature_extractor_type" in preprocessor:
        return "audio-classification"
    labels = {str(k).lower() for k in (config.get("label2id") or {})}
    return "zero-shot-classification" if "entailment" in labels else "text-classification"
