"""The digits demo's handler (serving/digits.py) run in-process in the vision env, as a
notebook would: what the engine serving it must answer the same; and a small random CNN of
that handler, for projects that need a model without training one."""

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support.paths import REPO, VISION

IN_PROCESS = """
import importlib.util, json, sys
from sklearn.datasets import load_digits

spec = importlib.util.spec_from_file_location("digits_handler", "serving/digits.py")
handler = importlib.util.module_from_spec(spec)
spec.loader.exec_module(handler)
model = handler.Model()
model.model_path = sys.argv[1]
model.setup("cpu")
digits = load_digits()
images = digits.images[-64:].astype(int).tolist()
refusals = {}
for name, bad in {
    "shape": [[0] * 8] * 7,
    "nan": [[float("nan")] * 8] * 8,
    "range": [[17] * 8] * 8,
    "text": "seven",
}.items():
    try:
        model.preprocess(bad)
    except ValueError as exc:
        refusals[name] = str(exc)
print(json.dumps({
    "images": images,
    "labels": digits.target[-64:].tolist(),
    "answers": model.predict([model.preprocess(image) for image in images]),
    "refusals": refusals,
}))
"""

RANDOM_CNN = """
import importlib.util, json, sys
from pathlib import Path
import torch

spec = importlib.util.spec_from_file_location("digits_handler", "serving/digits.py")
handler = importlib.util.module_from_spec(spec)
spec.loader.exec_module(handler)
config = {"channels": [4, 8], "hidden": 16, "dropout": 0.0, "image_size": [8, 8],
          "max_value": 16.0, "labels": list(range(10)), "handler": "serving/digits.py:Model"}
torch.manual_seed(0)
out = Path(sys.argv[1])
out.mkdir(parents=True)
torch.save(handler.network(config).state_dict(), out / "weights.pt")
(out / "config.json").write_text(json.dumps(config))
"""

FILES = ("envs/vision.yml", "envs/vision.lock", "gradio_apps/digits.py", "serving/digits.py")
MANIFEST = """\
[project]
name = "{name}"
[engines.digits]
env = "vision"
model = "models/digits"
handler = "serving/digits.py:Model"
port = 8002
[apps.draw]
env = "vision"
file = "gradio_apps/digits.py"
engine = "digits"
"""


def _vision(*args: str, root: Path) -> str:
    proc = subprocess.run(
        [str(VISION), "-c", *args], cwd=root, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def in_process(model: Path, root: Path = REPO) -> dict:
    """The handler of root on the last 64 of scikit-learn's digits: {"images", "labels",
    "answers"} and "refusals" (the ValueError messages of four bad images)."""
    return json.loads(_vision(IN_PROCESS, str(model), root=root))


def same_answers(got: list[dict], want: list[dict]) -> bool:
    """Equal labels, and scores equal up to float32 rounding (batch-mates may differ)."""
    return [a["label"] for a in got] == [a["label"] for a in want] and all(
        a["scores"] == pytest.approx(b["scores"], abs=1e-5) for a, b in zip(got, want, strict=True)
    )


def digits_project(root: Path, name: str = "digitsproj", model: bool = True) -> None:
    """The shipped digits demo in a throwaway project: the vision env's spec and lock, the
    draw app and the handler, the digits engine and the draw app declared, and (model) a
    random CNN of the handler in models/digits, made by the repo's vision env."""
    for path in FILES:
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / path, root / path)
    (root / "workbench.toml").write_text(MANIFEST.format(name=name))
    if model:
        _vision(RANDOM_CNN, str(root / "models" / "digits"), root=root)
