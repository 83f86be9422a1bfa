"""Throwaway projects and what goes in them (envs, packages, git repos, notebooks, a tiny
model), and the project fixtures."""

import os
import shutil
import subprocess
from pathlib import Path

import nbformat
import pytest

from tests.support.cli import workbench, write_env
from tests.support.paths import REPO, TEXTGEN
from tests.support.processes import free_port


@pytest.fixture(scope="session")
def demo_envs() -> None:
    """The project's own envs (textgen, embed, vision), built from their locks into the repo's
    gitignored .workbench/ (a no-op when they are current), with their kernels visible."""
    os.environ["JUPYTER_PATH"] = str(REPO / ".workbench" / "jupyter")
    proc = workbench("env", "create", "--all", "--locked", cwd=REPO)
    assert proc.returncode == 0, proc.stderr


ECHO_APP = """
import gradio as gr

def echo(text):
    if len(text) > 50:
        raise gr.Error("text longer than 50 characters")
    return text.upper()

with gr.Blocks(title="Echo") as demo:
    box = gr.Textbox(label="text")
    out = gr.Textbox(label="shouted")
    box.submit(echo, box, out, api_name="echo")
"""


@pytest.fixture(scope="session")
def gradio_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project with a tiny Gradio env "ui" (ipykernel included, so kernel wb-ui), built
    once per session: apps echo (shouts its input) and broken (fails on import) on free
    ports, and a free [lab] port. A module that starts services here stops them all."""
    root = tmp_path_factory.mktemp("appproj")
    write_env(root, "ui", "dependencies:\n  - python=3.11\n  - gradio>=6\n")
    (root / "apps").mkdir()
    (root / "apps/echo.py").write_text(ECHO_APP)
    (root / "apps/broken.py").write_text(
        "import gradio as gr\nraise RuntimeError('no model here')\n"
    )
    port = free_port()
    (root / "workbench.toml").write_text(
        f'[project]\nname = "appproj"\n'
        f'[apps.echo]\nenv = "ui"\nfile = "apps/echo.py"\nport = {port}\n'
        f'[apps.broken]\nenv = "ui"\nfile = "apps/broken.py"\nport = {port + 1}\n'
        f"[lab]\nport = {free_port()}\n"
    )
    proc = workbench("env", "create", "ui", cwd=root)
    assert proc.returncode == 0, proc.stderr
    yield root
    workbench("down", cwd=root)


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty workbench project in a temp dir; user-wide Jupyter dirs point into it too."""
    root = tmp_path / "proj"
    (root / "envs").mkdir(parents=True)
    (root / "workbench.toml").write_text('[project]\nname = "testproj"\n')
    monkeypatch.setenv("JUPYTER_DATA_DIR", str(tmp_path / "user-jupyter"))
    monkeypatch.setenv("JUPYTER_PATH", str(root / ".workbench" / "jupyter"))
    return root


def make_package(folder: Path, name: str, version: str, setup_py: str = "") -> Path:
    """A tiny installable project (setuptools, src layout) whose module has VERSION;
    setup_py, when given, runs at build time (e.g. to make a build slow)."""
    module = folder / "src" / name
    module.mkdir(parents=True, exist_ok=True)
    (folder / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools>=61"]\nbuild-backend = "setuptools.build_meta"\n'
        f'[project]\nname = "{name}"\nversion = "{version}"\n'
    )
    (module / "__init__.py").write_text(f"VERSION = {version!r}\n")
    if setup_py:
        (folder / "setup.py").write_text(setup_py)
    return folder


def git(repo: Path, *args: str) -> str:
    """Run git in repo (identity and default branch fixed) and return its stdout."""
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.invalid",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.invalid",
    }
    return subprocess.run(
        ["git", "-c", "init.defaultBranch=main", *args],
        cwd=repo,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


def notebook(
    path: Path,
    *cells: str,
    kernel: str = "wb-tiny",
    params: str = "x = 1",
    smoke: dict | None = None,
) -> Path:
    """A notebook with a tagged parameters cell followed by the given code cells."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": kernel, "display_name": kernel, "language": "python"}
    if smoke is not None:
        nb.metadata["workbench"] = {"smoke": smoke}
    first = nbformat.v4.new_code_cell(params)
    first.metadata["tags"] = ["parameters"]
    nb.cells = [first, *(nbformat.v4.new_code_cell(c) for c in cells)]
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    return path


BUILD_GPT = r"""
import sys, torch
from pathlib import Path
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast
import pydoc_data.topics as t
out = Path(sys.argv[1]); out.mkdir(parents=True, exist_ok=True)
text = [v for _, v in sorted(t.topics.items())][:20]
tok = Tokenizer(models.BPE())
tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
tok.decoder = decoders.ByteLevel()
tok.train_from_iterator(text, trainers.BpeTrainer(
    vocab_size=400, special_tokens=["<|endoftext|>"],
    initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>",
                               pad_token="<|endoftext|>")
fast.save_pretrained(out)
torch.manual_seed(0)
cfg = GPT2Config(vocab_size=fast.vocab_size, n_positions=1024, n_embd=64, n_layer=2, n_head=2,
                 bos_token_id=0, eos_token_id=None, pad_token_id=0)
model = GPT2LMHeadModel(cfg)
model.generation_config.eos_token_id = None  # random weights: never stop early
model.save_pretrained(out)
"""


def build_tiny_gpt(path: Path, python: Path = TEXTGEN) -> None:
    """A tiny random GPT-2 (BUILD_GPT) saved at path, by python (the repo's textgen env)."""
    built = subprocess.run(
        [str(python), "-c", BUILD_GPT, str(path)], capture_output=True, text=True, timeout=300
    )
    assert built.returncode == 0, built.stderr


def textgen_project(root: Path) -> None:
    """In a throwaway project whose workbench.toml is written: the textgen env built from
    the repo's lock, the repo's chat front and a tiny random GPT-2 in models/tiny-gpt."""
    (root / "envs").mkdir(parents=True, exist_ok=True)
    (root / "gradio_apps").mkdir(exist_ok=True)
    for name in ("textgen.yml", "textgen.lock"):
        shutil.copy(REPO / "envs" / name, root / "envs" / name)
    shutil.copy(REPO / "gradio_apps" / "chat.py", root / "gradio_apps" / "chat.py")
    build_tiny_gpt(root / "models" / "tiny-gpt")
    built = workbench("env", "create", "textgen", "--locked", cwd=root)
    assert built.returncode == 0, built.stderr
