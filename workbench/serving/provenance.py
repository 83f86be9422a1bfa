"""Where an image's model comes from (the engine's, else the app's): its folder in the
project (or a hub id, or a folder in an installed package), the model card beside it, and
the recorded run that wrote it.

Run records do not list the files a run wrote; the producing run is the successful run during
which the folder's newest file was written and whose parameters (given, or the notebook's
defaults) name the folder. Secret-looking values in a card never reach a label.
"""

import ast
import json
from dataclasses import dataclass
from pathlib import Path

from workbench.errors import WorkbenchError, excerpt
from workbench.notebooks import records
from workbench.project import AppEntry, EngineEntry, Project

MODEL_MODES = ("mount", "bake")


@dataclass(frozen=True)
class Model:
    """The model: a project folder (baked in, or mounted at run time), a reference the env
    resolves itself (a hub id, or pkg:PACKAGE/folder for a model an installed package ships),
    or none; with the model card found in the folder and the run that wrote it."""

    mode: str  # "bake", "mount", "hub", "package" or "none"
    given: str | None = None  # as the manifest names it
    source: Path | None = None
    target: str | None = None
    reference: str | None = None
    card: dict | None = None
    run_id: str | None = None

    @property
    def value(self) -> str | None:
        """What the service gets: the app's WORKBENCH_MODEL, the engine's --model."""
        return self.target or self.reference


def model_of(
    project: Project,
    owner: AppEntry | EngineEntry,
    mode: str,
    models_dir: str,
    warnings: list[str],
) -> Model:
    """The model of an app or engine for an image (in models_dir there): its folder with
    card and producing run, or a reference the env resolves."""
    if mode not in MODEL_MODES:
        raise WorkbenchError(f"--model {excerpt(mode)}: choose {' or '.join(MODEL_MODES)}")
    kind = "engine" if isinstance(owner, EngineEntry) else "app"
    model, where = owner.model, f"{kind} '{owner.name}'"
    if not model:
        return Model("none")
    if model.startswith("pkg:"):  # a folder an installed package ships: in the env already
        return Model("package", given=model, reference=model)
    folder = project.root / model
    if not folder.exists():
        first = Path(model).parts[0]
        if model.startswith((".", "/")) or (project.root / first).is_dir():
            raise WorkbenchError(
                f"{where}: model folder {model} does not exist yet; run the "
                "notebook that writes it (`workbench run NOTEBOOK`)"
            )
        if mode == "bake":
            raise WorkbenchError(
                f"{where}: model {excerpt(model)} is a hub id, not a project "
                "folder; --model bake needs a folder"
            )
        warnings.append(
            f"model {model} is a hub id: the container must download it when it starts "
            f"(give it network and HF_HUB_OFFLINE=0), or point the {kind} at a project folder"
        )
        return Model("hub", given=model, reference=model)
    if not folder.is_dir():
        raise WorkbenchError(f"{where}: model {model} is not a folder")
    hidden = unreadable(folder)
    if mode == "mount" and hidden:
        warnings.append(
            f"{hidden[0]} is not readable by others: the image's "
            f"user cannot read it from a volume (chmod -R a+rX {model}, or --model bake)"
        )
    card = _card(folder / "model_card.json", warnings)
    producer = producing_run(project, folder)
    if producer is None:
        warnings.append(
            f"no recorded run wrote {model}: the image's model.run label stays empty "
            "(train it with `workbench run` to record where it came from)"
        )
    return Model(
        mode=mode,
        given=model,
        source=folder.resolve(),
        target=f"{models_dir}/{folder.resolve().name}",
        card=card,
        run_id=producer.id if producer else None,
    )


def unreadable(folder: Path) -> list[Path]:
    """Files and folders under folder that others cannot read (or enter)."""
    found = []
    for path in sorted([folder, *folder.rglob("*")]):
        needed = 0o005 if path.is_dir() else 0o004
        if path.stat().st_mode & needed != needed:
            found.append(path)
    return found


def _card(path: Path, warnings: list[str]) -> dict | None:
    if not path.is_file():
        return None
    try:
        card = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        warnings.append(f"{path}: not readable JSON ({exc}); no model card label")
        return None
    return _redacted(card) if isinstance(card, dict) else None


def _redacted(value: object) -> object:
    """A model card without the values of secret-looking keys (as run records keep them)."""
    if isinstance(value, dict):
        return {k: _redacted(v) for k, v in records.redacted(value).items()}
    if isinstance(value, list):
        return [_redacted(v) for v in value]
    return value


def producing_run(project: Project, folder: Path) -> records.RunRecord | None:
    """The recorded run that wrote folder: a successful run during which its newest file was
    written, whose parameters (given, or the notebook's defaults) name the folder; the
    latest such run."""
    folder = folder.resolve()
    files = [p for p in folder.rglob("*") if p.is_file()]
    if not files:
        return None
    written = max(p.stat().st_mtime for p in files)
    found = [
        record
        for record in records.listed(project)
        if record.status == records.RunStatus.OK
        and record.ended is not None
        and record.started - 1 <= written <= record.ended + 1
        and folder in _paths_named(project, record)
    ]
    return max(found, key=lambda r: r.ended, default=None)


def _paths_named(project: Project, record: records.RunRecord) -> set[Path]:
    """Paths the run's string parameters name, read from the notebook's folder (as the
    notebook resolves them) and from the project root."""
    notebook = project.root / record.notebook
    values = {**_defaults(notebook), **record.parameters}
    named = set()
    for value in values.values():
        if isinstance(value, str) and value and "\0" not in value:
            for base in (notebook.parent, project.root):
                named.add((base / value).resolve())
    return named


def _defaults(notebook: Path) -> dict:
    """The default values the notebook's parameters cell declares ({} when unreadable)."""
    from workbench.notebooks import parameters

    try:
        declared = parameters.parameters(notebook)
    except Exception:  # noqa: BLE001 - a notebook that moved or broke names no defaults
        return {}
    defaults = {}
    for name, param in declared.items():
        try:
            defaults[name] = ast.literal_eval(param.default)
        except (ValueError, SyntaxError):
            continue
    return defaults
