"""`workbench init`: an existing repository taken in as it is laid out.

Finds conda env files (environment.yml|yaml, and variants such as environment-gpu.yml, at
the root; any env file in conda/ and envs/; environment.yml in binder/ and .binder/),
requirements*.txt files (pip-only envs; those a conda spec includes with -r belong to it)
and notebooks; assigns each notebook to an env from its kernelspec or its folder, and the
rest to a default env (the only one, or the unsuffixed spec at the root) with one
`"." = ENV` line; and writes workbench.toml pointing at the spec files where they are,
so nothing is copied and nothing can drift apart. Edits are additions only: an existing
manifest keeps its content and comments, and running init again changes nothing.

An environment.yml beside a requirements.txt usually describes one project twice (for
conda users and for pip users): the one that pins more becomes the env, the other is
kept in the manifest as a commented-out alternative, so notebooks have one env to run in.
"""

import contextlib
import json
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from packaging.requirements import InvalidRequirement, Requirement

from workbench.envs import spec as specs
from workbench.errors import WorkbenchError
from workbench.jsonfiles import write_atomic
from workbench.manifest import ENV_NAME, MANIFEST
from workbench.project import STATE_DIR
from workbench.textfiles import read_text

ROOT_SPEC = re.compile(r"^environment([-_.].+)?\.ya?ml$")
SPEC_FOLDERS = ("conda", "envs")  # any env file in them
BINDER_FOLDERS = ("binder", ".binder")  # binder's conventional names only
REQUIREMENTS = re.compile(r"^requirements([-_.].+)?\.txt$")
# Folders never searched for notebooks: state, outputs, installed packages.
SKIP_DIRS = {"node_modules", "site-packages", "__pycache__", "runs", "build", "dist"}
# The manifest key that assigns every notebook under the root not assigned otherwise.
DEFAULT_KEY = "."
# How notebooks that name no project env are assigned to the default env.
BY_DEFAULT = ("only env", "default env")
IGNORED = (f"{STATE_DIR}/", "runs/")
MAX_NOTEBOOK_BYTES = 64 << 20


@dataclass
class FoundEnv:
    name: str
    spec: str  # relative to the root, as the manifest writes it
    kind: str  # "conda" or "pip"
    conda_name: str | None = None  # the spec's own `name:`
    new: bool = True  # not yet in the manifest

    def to_json(self) -> dict:
        return {"name": self.name, "spec": self.spec, "kind": self.kind, "new": self.new}


@dataclass
class FoundNotebook:
    path: str
    env: str | None
    by: str  # "kernelspec", "folder", "only env", "default env", "manifest" or why none
    kernel: str | None

    def to_json(self) -> dict:
        return {"path": self.path, "env": self.env, "by": self.by, "kernel": self.kernel}


@dataclass
class Alternative:
    """A spec describing the same project as env `of`, kept as a commented-out env."""

    env: FoundEnv
    of: str
    pinned: str  # e.g. "pins 0 of 3 packages"
    of_pinned: str

    def to_json(self) -> dict:
        return {**self.env.to_json(), "alternative_of": self.of, "pinned": self.pinned}


@dataclass
class InitPlan:
    root: Path
    envs: list[FoundEnv]
    notebooks: list[FoundNotebook]
    skipped: list[dict[str, str]] = field(default_factory=list)
    alternatives: list[Alternative] = field(default_factory=list)
    default_env: str | None = None
    manifest_before: str | None = None
    manifest_after: str = ""
    gitignore_added: list[str] = field(default_factory=list)
    written: bool = False

    @property
    def changes(self) -> bool:
        return self.manifest_after != (self.manifest_before or "") or bool(self.gitignore_added)

    def to_json(self) -> dict:
        return {
            "root": str(self.root),
            "manifest": str(self.root / MANIFEST),
            "changed": self.changes,
            "written": self.written,
            "envs": [e.to_json() for e in self.envs],
            "alternatives": [a.to_json() for a in self.alternatives],
            "default_env": self.default_env,
            "notebooks": [n.to_json() for n in self.notebooks],
            "unassigned": [n.path for n in self.notebooks if n.env is None],
            "skipped": self.skipped,
            "gitignore_added": self.gitignore_added,
        }


def plan(root: Path) -> InitPlan:
    """What init would write in root; reads files only."""
    root = root.resolve()
    if not root.is_dir():
        raise WorkbenchError(f"{root}: not a folder")
    manifest_path = root / MANIFEST
    before = read_text(manifest_path, 1 << 20, "manifest") if manifest_path.is_file() else None
    existing = _existing(before, manifest_path)
    skipped: list[dict[str, str]] = []
    alternatives: list[Alternative] = []
    envs = _envs(root, existing, skipped, alternatives, before or "")
    default = _default_env(root, envs)
    notebooks = _notebooks(root, envs, default, existing.get("notebooks", {}), skipped)
    project_name = existing.get("project", {}).get("name") or repository_name(root)
    after = _manifest(before, project_name, envs, notebooks, existing, alternatives)
    return InitPlan(
        root,
        envs,
        notebooks,
        skipped,
        alternatives,
        default if any(n.by in BY_DEFAULT for n in notebooks) else None,
        before,
        after,
        _gitignore_missing(root),
        False,
    )


def apply(result: InitPlan) -> InitPlan:
    """Write the manifest and .gitignore lines the plan holds (nothing when unchanged)."""
    if result.manifest_after != (result.manifest_before or ""):
        write_atomic(result.root / MANIFEST, result.manifest_after)
    if result.gitignore_added:
        path = result.root / ".gitignore"
        text = path.read_text() if path.is_file() else ""
        if text and not text.endswith("\n"):
            text += "\n"
        header = "# workbench: env builds, kernels, logs and run records\n"
        write_atomic(path, text + header + "".join(f"{line}\n" for line in result.gitignore_added))
    result.written = result.changes
    return result


def _existing(text: str | None, path: Path) -> dict:
    if text is None:
        return {}
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise WorkbenchError(f"{path}: invalid TOML: {exc}; fix it before running init") from None


def _slug(text: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-.").lower()
    return slug if slug and ENV_NAME.fullmatch(slug) else "env"


def _spec_files(root: Path) -> list[Path]:
    """Conda env files where repositories keep them."""
    found = [p for p in sorted(root.iterdir()) if p.is_file() and ROOT_SPEC.match(p.name)]
    for folder in SPEC_FOLDERS:
        if (root / folder).is_dir():
            found += sorted(
                p
                for p in (root / folder).iterdir()
                if p.suffix in (".yml", ".yaml") and p.is_file()
            )
    for folder in BINDER_FOLDERS:
        found += [root / folder / n for n in ("environment.yml", "environment.yaml")]
    return [p for p in found if p.is_file()]


def _requirement_files(root: Path) -> list[Path]:
    found = [p for p in sorted(root.iterdir()) if p.is_file() and REQUIREMENTS.match(p.name)]
    for folder in BINDER_FOLDERS:
        binder = root / folder
        if (binder / "requirements.txt").is_file() and not any(
            (binder / n).is_file() for n in ("environment.yml", "environment.yaml")
        ):
            found.append(binder / "requirements.txt")
    return found


def _envs(
    root: Path,
    existing: dict,
    skipped: list[dict[str, str]],
    alternatives: list[Alternative],
    manifest: str,
) -> list[FoundEnv]:
    """Every env spec in root: those the manifest already has, and new ones, named; of an
    unsuffixed environment.yml and requirements.txt side by side, only the one that pins
    more (the other goes to alternatives)."""
    manifest_envs = existing.get("envs", {})
    known = {
        (root / table["spec"]).resolve(): name
        for name, table in manifest_envs.items()
        if isinstance(table, dict) and isinstance(table.get("spec"), str)
    }
    taken = set(manifest_envs)
    loaded: list[tuple[Path, str, specs.EnvSpec]] = []
    included: set[Path] = set()
    for path in _spec_files(root):
        try:
            spec = specs.load(path, root=root)
        except WorkbenchError as exc:
            skipped.append({"path": _rel(path, root), "reason": exc.message})
            continue
        if not _is_env_file(path):
            skipped.append({"path": _rel(path, root), "reason": "no 'dependencies:' list"})
            continue
        included.update(p.resolve() for p in spec.included_files)
        loaded.append((path, "conda", spec))
    for path in _requirement_files(root):
        if path.resolve() in included:
            skipped.append(
                {"path": _rel(path, root), "reason": "included (-r) by a conda spec above"}
            )
            continue
        try:
            loaded.append((path, "pip", specs.load(path, root=root)))
        except WorkbenchError as exc:
            skipped.append({"path": _rel(path, root), "reason": exc.message})
    commented = {
        (root / spec).resolve() for spec in re.findall(r'(?m)^#\s*spec\s*=\s*"([^"]+)"', manifest)
    }
    pair = _pair(loaded, known, commented)
    envs: list[FoundEnv] = []
    for path, kind, spec in loaded:
        if pair and path == pair[1][0]:
            continue
        own_name = spec.raw.get("name") if isinstance(spec.raw.get("name"), str) else None
        if pair and path == pair[0][0]:
            own_name = own_name or _conda_name(pair[1][2])
        envs.append(_found(root, path, kind, own_name, known, taken))
    if pair:
        (kept_path, _, kept), (other_path, other_kind, other) = pair
        of = next(e for e in envs if e.spec == _rel(kept_path, root))
        name = _unique(f"{of.name}-{other_kind}", taken)
        alternatives.append(
            Alternative(
                FoundEnv(name, _rel(other_path, root), other_kind, _conda_name(other)),
                of.name,
                _pinned(other),
                _pinned(kept),
            )
        )
    return envs


def _pair(
    loaded: list[tuple[Path, str, specs.EnvSpec]], known: dict, commented: set[Path]
) -> tuple[tuple[Path, str, specs.EnvSpec], tuple[Path, str, specs.EnvSpec]] | None:
    """(kept, alternative) when a folder holds an environment.yml and a requirements.txt:
    when both are new to the manifest, the one that pins the larger share of its packages
    is kept (on a tie, the conda file, which also names the Python); when the manifest
    has one and keeps the other commented out, as it decided before."""
    for conda in loaded:
        if conda[1] != "conda" or not re.fullmatch(r"environment\.ya?ml", conda[0].name):
            continue
        for pip in loaded:
            if pip[1] == "pip" and pip[0] == conda[0].parent / "requirements.txt":
                for kept, other in ((conda, pip), (pip, conda)):
                    if kept[0].resolve() in known and other[0].resolve() in commented:
                        return kept, other
                if conda[0].resolve() in known or pip[0].resolve() in known:
                    return None
                pins_more = _pin_share(pip[2]) > _pin_share(conda[2])
                return (pip, conda) if pins_more else (conda, pip)
    return None


def _pins(spec: specs.EnvSpec) -> tuple[int, int]:
    """(pinned, all) of a spec's packages: conda `=1.2`/`==1.2`, pip `==`/`===`/`~=`."""
    pinned = total = 0
    for dep in spec.conda:
        if dep.name in ("python", "pip"):
            continue
        total += 1
        pinned += bool(dep.version) and not dep.version.startswith(("<", ">", "!"))
    for line in spec.pip:
        if line.kind != "requirement":
            continue
        total += 1
        try:
            specifiers = Requirement(line.value).specifier
        except InvalidRequirement:
            continue
        pinned += any(s.operator in ("==", "===", "~=") for s in specifiers)
    return pinned, total


def _pin_share(spec: specs.EnvSpec) -> float:
    pinned, total = _pins(spec)
    return pinned / total if total else 0.0


def _pinned(spec: specs.EnvSpec) -> str:
    pinned, total = _pins(spec)
    return f"pins {pinned} of {total} package{'s' if total != 1 else ''}"


def _conda_name(spec: specs.EnvSpec) -> str | None:
    name = spec.raw.get("name")
    return name if isinstance(name, str) else None


def _is_env_file(path: Path) -> bool:
    """A YAML file with a dependencies list (conda/ may also hold other YAML, e.g. recipes)."""
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return False
    return isinstance(data, dict) and isinstance(data.get("dependencies"), list)


def _found(
    root: Path, path: Path, kind: str, conda_name: str | None, known: dict, taken: set[str]
) -> FoundEnv:
    rel = _rel(path, root)
    if path.resolve() in known:
        return FoundEnv(known[path.resolve()], rel, kind, conda_name, new=False)
    name = _env_name(root, path, kind, conda_name)
    if kind == "pip" and path.stem == "requirements" and name.lower() in _lower(taken):
        name = "pip"  # the repository's name went to its conda env
    name = _unique(name, taken)
    taken.add(name)
    return FoundEnv(name, rel, kind, conda_name)


def _env_name(root: Path, path: Path, kind: str, conda_name: str | None) -> str:
    """envs/X.yml -> X (workbench finds it there by that name anyway); else the spec's
    own `name:`; else what the file name adds (environment-gpu.yml, requirements-dev.txt
    -> gpu, dev); else the folder (binder); else the repository."""
    if path.parent == root / "envs":
        return _slug(path.stem)
    if conda_name:
        return _slug(conda_name)
    suffix = re.sub(r"^(environment|requirements)[-_.]?", "", path.stem)
    if suffix:
        return _slug(suffix)
    if path.parent != root:
        return _slug(path.parent.name.lstrip("."))
    return repository_name(root)


def repository_name(root: Path) -> str:
    """The project's own name: its package's (pyproject.toml, setup.cfg), else its git
    remote's, else "main"; never the checkout's folder, which is often a fork's, a
    download's (repo-main) or a scratch name."""
    names = []
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        names.append(tomllib.loads((root / "pyproject.toml").read_text())["project"]["name"])
    with contextlib.suppress(OSError):
        setup = (root / "setup.cfg").read_text()
        names += re.findall(r"(?ms)^\[metadata\].*?^name\s*=\s*(\S+)", setup)[:1]
    with contextlib.suppress(OSError):
        config = (root / ".git" / "config").read_text()
        origin = re.search(r'(?ms)^\[remote "origin"\][^\[]*?^\s*url\s*=\s*(\S+)', config)
        if origin:
            names.append(re.split(r"[/:]", re.sub(r"\.git$", "", origin[1].rstrip("/")))[-1])
    slugs = [_slug(n) for n in names if isinstance(n, str)]
    return next((s for s in slugs if s != "env"), "main")


def _lower(names: set[str]) -> set[str]:
    return {n.lower() for n in names}


def _unique(name: str, taken: set[str]) -> str:
    candidate, n = name, 2
    while candidate.lower() in _lower(taken):
        candidate, n = f"{name}-{n}", n + 1
    return candidate


def _default_env(root: Path, envs: list[FoundEnv]) -> str | None:
    """The env notebooks run in when nothing names theirs: the only one, else the one from
    the root's unsuffixed environment.yml or requirements.txt (when exactly one is)."""
    if len(envs) == 1:
        return envs[0].name
    main = [e.name for e in envs if re.fullmatch(r"environment\.ya?ml|requirements\.txt", e.spec)]
    return main[0] if len(main) == 1 else None


def _notebooks(
    root: Path,
    envs: list[FoundEnv],
    default: str | None,
    assigned: dict,
    skipped: list[dict[str, str]],
) -> list[FoundNotebook]:
    found = []
    for path in notebook_files(root):
        rel = _rel(path, root)
        kernelspec = _kernelspec(path)
        if isinstance(kernelspec, str):
            skipped.append({"path": rel, "reason": kernelspec})
            continue
        found.append(_assign(rel, *kernelspec, envs, default, assigned))
    return found


def notebook_files(root: Path) -> list[Path]:
    """Notebooks under root (a folder, or one notebook), outside hidden folders,
    checkpoints, envs and outputs."""
    if root.is_file():
        return [root] if root.suffix == ".ipynb" else []
    found: list[Path] = []
    todo = [root]
    while todo:
        folder = todo.pop()
        try:
            entries = sorted(folder.iterdir())
        except OSError:
            continue
        if any((folder / marker).exists() for marker in ("pyvenv.cfg", "conda-meta")):
            continue
        for entry in entries:
            if entry.name.startswith(".") or entry.name in SKIP_DIRS:
                continue
            if entry.is_dir() and not entry.is_symlink():
                todo.append(entry)
            elif entry.suffix == ".ipynb" and entry.is_file():
                found.append(entry)
    return sorted(found)


def _kernelspec(path: Path) -> tuple[str | None, str | None] | str:
    """(kernel name, display name) from a notebook's metadata, or why it cannot be read."""
    try:
        if path.stat().st_size > MAX_NOTEBOOK_BYTES:
            return f"not read: over {MAX_NOTEBOOK_BYTES >> 20} MB"
        spec = json.loads(path.read_text()).get("metadata", {}).get("kernelspec") or {}
        name, display = spec.get("name"), spec.get("display_name")
    except (OSError, ValueError, AttributeError) as exc:
        return f"not a readable notebook ({exc})"
    return (name if isinstance(name, str) else None), (
        display if isinstance(display, str) else None
    )


def _assign(
    rel: str,
    kernel: str | None,
    display: str | None,
    envs: list[FoundEnv],
    default: str | None,
    assigned: dict,
) -> FoundNotebook:
    """The env a notebook runs in: the manifest's, its kernelspec's, its folder's, the
    default env's."""
    if rel in assigned:
        return FoundNotebook(rel, assigned[rel], "manifest", kernel)
    by_name = {e.name.lower(): e.name for e in envs}
    by_name.update({e.conda_name.lower(): e.name for e in envs if e.conda_name})
    for label in filter(None, (kernel, display)):
        for candidate in _kernel_env_names(label):
            if candidate.lower() in by_name:
                return FoundNotebook(rel, by_name[candidate.lower()], "kernelspec", kernel)
    parts = Path(rel).parts[:-1]
    for part in reversed(parts):
        if part.lower() in by_name:
            return FoundNotebook(rel, by_name[part.lower()], "folder", kernel)
    for env in envs:
        spec_folder = Path(env.spec).parent
        if spec_folder != Path(".") and Path(rel).is_relative_to(spec_folder):
            return FoundNotebook(rel, env.name, "folder", kernel)
    if default:
        return FoundNotebook(rel, default, BY_DEFAULT[len(envs) > 1], kernel)
    reason = "no env found (none in the repository)" if not envs else "ambiguous"
    return FoundNotebook(rel, None, reason, kernel)


def _kernel_env_names(label: str) -> list[str]:
    """Env names a kernel name or display name may carry: wb-NAME, conda-env-NAME-py
    (nb_conda_kernels), "Python [conda env:NAME]", or the name itself."""
    names = [label]
    for pattern in (
        r"^wb-(.+)$",
        r"^conda-(?:env|root)-(.+?)-(?:py|r)$",
        r"\[conda env:([^\]]+)\]",
        r"^Python \d[\d.]* \(([^)]+)\)$",
    ):
        match = re.search(pattern, label)
        if match:
            names.insert(0, match[1].split("/")[-1])
    return names


def _manifest(
    before: str | None,
    project_name: str,
    envs: list[FoundEnv],
    notebooks: list[FoundNotebook],
    existing: dict,
    alternatives: list[Alternative],
) -> str:
    """The manifest text: the existing one with new tables and keys added, or a new one."""
    text = before or (
        "# Written by `workbench init`: the envs and notebooks of this repository, where\n"
        "# they are. Edit freely; `workbench init` only ever adds what is missing.\n"
        f'[project]\nname = "{project_name}"\n'
    )
    for env in envs:
        spec = Path(env.spec)
        found_anyway = spec.parent == Path("envs") and spec.stem == env.name
        if env.new and not found_anyway:
            text = _append(text, f'\n[envs.{_key(env.name)}]\nspec = "{env.spec}"\n')
    for alt in alternatives:
        if f'# spec = "{alt.env.spec}"' not in text:
            text = _append(
                text,
                f"\n# {alt.env.spec} describes this project too ({alt.pinned}); env {alt.of}\n"
                f"# above comes from the file that pins more ({alt.of_pinned}). To build this "
                f"one too,\n# uncomment:\n# [envs.{_key(alt.env.name)}]\n"
                f'# spec = "{alt.env.spec}"\n',
            )
    present = existing.get("notebooks", {})
    lines = [
        f'{_key(key)} = "{env}"'
        for key, env in _assignments(notebooks).items()
        if key not in present
    ]
    default = next((n.env for n in notebooks if n.by in BY_DEFAULT), None)
    if default and DEFAULT_KEY not in present:
        lines.append(f'{_key(DEFAULT_KEY)} = "{default}"  # every other notebook under the root')
    if lines:
        header = re.search(r"^\[notebooks\][ \t]*(#.*)?$", text, re.M)
        block = "\n".join(lines) + "\n"
        if header:
            text = text[: header.end() + 1] + block + text[header.end() + 1 :]
        else:
            text = _append(
                text,
                "\n# The env each notebook runs in when its kernel is not a project kernel\n"
                "# (a file, or a folder and everything under it).\n[notebooks]\n" + block,
            )
    return text


def _assignments(notebooks: list[FoundNotebook]) -> dict[str, str]:
    """Folder entries where every notebook directly in a folder (not the root) runs in one
    env, file entries otherwise; notebooks without an env are left out."""
    by_folder: dict[str, set[str | None]] = {}
    for nb in notebooks:
        by_folder.setdefault(Path(nb.path).parent.as_posix(), set()).add(nb.env)
    result: dict[str, str] = {}
    for nb in notebooks:
        if nb.env is None or nb.by == "manifest" or nb.by in BY_DEFAULT:
            continue
        folder = Path(nb.path).parent.as_posix()
        if folder != "." and by_folder[folder] == {nb.env}:
            result[folder] = nb.env
        else:
            result[nb.path] = nb.env
    return result


def _append(text: str, addition: str) -> str:
    return (text if text.endswith("\n") or not text else text + "\n") + addition


def _key(key: str) -> str:
    """A TOML key: bare when it can be, else quoted."""
    if re.fullmatch(r"[A-Za-z0-9_-]+", key):
        return key
    return json.dumps(key)


def _gitignore_missing(root: Path) -> list[str]:
    path = root / ".gitignore"
    try:
        lines = {line.strip() for line in path.read_text().splitlines()}
    except OSError:
        lines = set()
    return [
        entry
        for entry in IGNORED
        if not {entry, entry.rstrip("/"), "/" + entry, "/" + entry.rstrip("/")} & lines
    ]


def _rel(path: Path, root: Path) -> str:
    return path.resolve().relative_to(root).as_posix()
