#!/usr/bin/env python3
"""FAKES of mamba 2 and micromamba, replaying behaviour RECORDED from their sources.

mamba and micromamba cannot be installed here (no conda channel is reachable), so the
tests drive these fakes instead; real conda 26.7.1 runs for real (tests/support/realconda.py).
Each PROFILE below is one tool at one version, and every behaviour it replays is cited
from mamba-org/mamba at that tag (all of mamba 2.x is micromamba built under the name
`mamba`; micromamba/src/umamba.cpp prints the bare version for `--version`):

- argument parsing is CLI11's: an unknown flag exits 109 with "The following argument(s)
  was/were not expected: …" (in reverse order) and "Run with --help for more information."
  (micromamba/src/main.cpp, CLI11_PARSE); the flags each subcommand accepts are those of
  micromamba/src/{common_options,list,env,shell}.cpp at the tag;
- `create` without `-y/--yes` prints the transaction and "Confirm changes: [Y/n] " and
  reads a line from stdin; an empty line or EOF takes the default, yes
  (libmamba/src/core/output.cpp, Console::prompt);
- a `pip:` section runs `PREFIX/bin/python -m pip install -r <temp file> --no-input`
  from the spec's folder (libmamba/src/api/{install,utils}.cpp, install_for_other_pkgmgr);
- `list --json` (libmamba/src/api/list.cpp) and `env export --explicit --md5`
  (micromamba/src/env.cpp) print what the PROFILE says; `list --explicit --md5` exists
  from 2.0.6 and prints bare `url#md5` lines (`#` for a pip package, which has no URL);
- every created env is added to ~/.conda/environments.txt: `register_envs` is no
  configurable setting (libmamba/src/core/environments_manager.cpp);
- `shell activate -s bash -p PREFIX` prints PosixActivator::script's lines
  (libmamba/src/core/activation.cpp), with the env's conda-meta/state variables and its
  etc/conda/activate.d scripts.

Packages come from a small made-up channel (CATALOGUE; md5s are md5(file name)); an env is
a venv of the base interpreter with its site-packages visible (so `python -m pip` works),
and noarch python packages write real files and dist-info folders. Each call appends a
JSON line (argv, whether it prompted, CONDA_OVERRIDE_CUDA) to $FAKE_CONDA_LOG.

Usage: FAKE_TOOL=mamba mamba.py PROFILE ARGS… (tests write bin/mamba or bin/micromamba
wrappers that call it so).
"""

import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

CLI11_EXIT = 109
GENERAL = {"-v", "--verbose", "-q", "--quiet", "-y", "--yes", "--json", "--offline"}
GENERAL |= {"--dry-run", "--download-only", "--experimental", "--debug", "--no-rc", "--no-env"}
PREFIX_OPTIONS = {"-r", "--root-prefix", "-p", "--prefix", "-n", "--name", "--rc-file"}
CREATE = {
    "flags": {*GENERAL, "--override-channels", "--strict-channel-priority", "--no-deps"},
    "options": {*PREFIX_OPTIONS, "-c", "--channel", "-f", "--file", "--platform"},
    "positionals": True,
}
ENV_EXPORT = {
    "flags": {*GENERAL, "-e", "--explicit", "--no-md5", "--md5", "--no-build", "--from-history"},
    "options": PREFIX_OPTIONS,
    "positionals": False,
}
SHELL_ACTIVATE = {"flags": {"--stack"}, "options": {"-s", "--shell", *PREFIX_OPTIONS}}
LIST_15 = {"flags": {*GENERAL, "-f", "--full-name"}, "options": PREFIX_OPTIONS, "positionals": True}
LIST_206 = {
    "flags": {
        *LIST_15["flags"],
        "--no-pip",
        "--reverse",
        "--explicit",
        "--md5",
        "-c",
        "--canonical",
    },
    "options": PREFIX_OPTIONS,
    "positionals": True,
}
LIST_28 = {
    "flags": {*LIST_206["flags"], "--sha256", "-e", "--export", "--revisions"},
    "options": PREFIX_OPTIONS,
    "positionals": True,
}

PROFILES = {
    "micromamba-1.5.12": {
        "source": "mamba-org/mamba tag micromamba-1.5.12",
        "version": "1.5.12",
        # libmamba/src/api/list.cpp: prefix_data.records() only (no pip), no url/md5 keys
        "list": LIST_15,
        "list_json": "list",
        "list_keys": ("base_url", "build_number", "build_string", "channel", "dist_name"),
        "list_pip": "none",
        "list_explicit": None,
        "pip_args": ["-r", "{file}", "--no-input"],
        "state_variables": False,  # libmamba/src/api/create.cpp: no spec_file_env_vars
    },
    "mamba-2.0.5": {
        "source": "mamba-org/mamba tag micromamba-2.0.5 (mamba 2.0.5 is the same build)",
        "version": "2.0.5",
        # micromamba/src/list.cpp 2.0.5: no --explicit/--md5; libmamba list.cpp uses
        # all_pkg_mgr_records(): pip packages that were requested and installed by pip
        "list": LIST_15,
        "list_json": "list",
        "list_keys": ("base_url", "build_number", "build_string", "channel", "dist_name"),
        "list_keys_extra": ("url", "md5"),
        "list_pip": "requested",
        "list_explicit": None,
        "pip_args": ["-r", "{file}", "--no-input", "--quiet"],
        "state_variables": False,
    },
    "mamba-2.8.1": {
        "source": "mamba-org/mamba tag 2.8.1",
        "version": "2.8.1",
        # libmamba/src/core/prefix_data.cpp 2.8.1: pip packages installed by pip or uv
        "list": LIST_28,
        "list_json": "list",
        "list_keys": ("base_url", "build_number", "build_string", "channel", "dist_name"),
        "list_keys_extra": ("url", "md5", "sha256"),
        "list_pip": "pip-or-uv",
        "list_explicit": "bare",
        "pip_args": ["-r", "{file}", "--no-input"],
        "state_variables": True,  # create.cpp: spec_file_env_vars into conda-meta/state
    },
    "micromamba-2.8.1": {
        "source": "mamba-org/mamba tag 2.8.1",
        "version": "2.8.1",
        "list": LIST_28,
        "list_json": "list",
        "list_keys": ("base_url", "build_number", "build_string", "channel", "dist_name"),
        "list_keys_extra": ("url", "md5", "sha256"),
        "list_pip": "pip-or-uv",
        "list_explicit": "bare",
        "pip_args": ["-r", "{file}", "--no-input"],
        "state_variables": True,
    },
    "mamba-main-1cdb572": {
        "source": "mamba-org/mamba main at 1cdb572ab (after 2.8.1, unreleased): list.cpp "
        'sets the JSON output at "/packages"',
        "version": "2.8.1",
        "list": LIST_28,
        "list_json": "object",
        "list_keys": ("base_url", "build_number", "build_string", "channel", "dist_name"),
        "list_keys_extra": ("url", "md5", "sha256"),
        "list_pip": "pip-or-uv",
        "list_explicit": "bare",
        "pip_args": ["-r", "{file}", "--no-input"],
        "state_variables": True,
    },
}

CHANNEL = "https://conda.anaconda.org/conda-forge"
SITE = "lib/python3.11/site-packages"
# name: (version, build, subdir, files). Python files of noarch packages are real files.
CATALOGUE = {
    "python": ("3.11.7", "hab00c5b_0_cpython", "linux-64", {}),
    "pip": ("24.2", "pyh8b19718_1", "noarch", {}),
    "ipykernel": ("6.29.5", "pyh3099207_0", "noarch", {}),
    "six": (
        "1.16.0",
        "pyh6c4a22f_0",
        "noarch",
        {
            f"{SITE}/six.py": "__version__ = '1.16.0'\n",
            f"{SITE}/six-1.16.0.dist-info/METADATA": "Metadata-Version: 2.1\nName: six\n"
            "Version: 1.16.0\n",
            f"{SITE}/six-1.16.0.dist-info/INSTALLER": "conda\n",
        },
    ),
    "wbtest-activate": (
        "1.0",
        "0",
        "noarch",
        {"etc/conda/activate.d/wbtest-activate.sh": "export WBTEST_ACTIVATED=1\n"},
    ),
}


def main(profile_name: str, argv: list[str]) -> int:
    profile = PROFILES[profile_name]
    entry = {"tool": os.environ.get("FAKE_TOOL", "mamba"), "argv": argv, "prompted": False}
    entry["CONDA_OVERRIDE_CUDA"] = os.environ.get("CONDA_OVERRIDE_CUDA")
    try:
        return dispatch(profile, argv, entry)
    finally:
        log = os.environ.get("FAKE_CONDA_LOG")
        if log:
            with open(log, "a") as handle:
                handle.write(json.dumps(entry) + "\n")


def dispatch(profile: dict, argv: list[str], entry: dict) -> int:
    if argv == ["--version"]:
        print(profile["version"])
        return 0
    if argv[:1] == ["create"]:
        args = parse(argv[1:], CREATE)
        return args if isinstance(args, int) else create(profile, args, entry)
    if argv[:2] == ["env", "export"]:
        args = parse(argv[2:], ENV_EXPORT)
        return args if isinstance(args, int) else export(args)
    if argv[:1] == ["list"]:
        args = parse(argv[1:], profile["list"])
        return args if isinstance(args, int) else listing(profile, args)
    if argv[:2] == ["shell", "activate"]:
        args = parse(argv[2:], SHELL_ACTIVATE)
        return args if isinstance(args, int) else activate(args)
    print(f"fake: {' '.join(argv[:2])} is not recorded", file=sys.stderr)
    return 2


def parse(args: list[str], accepted: dict) -> dict | int:
    """Flags and options as CLI11 parses them; unknown ones exit as CLI11 does."""
    found: dict = {"positionals": []}
    unexpected = []
    i = 0
    while i < len(args):
        arg = args[i]
        name, _, inline = arg.partition("=")
        if name in accepted.get("options", ()):
            value = inline or (args[i + 1] if i + 1 < len(args) else "")
            found.setdefault(name, []).append(value)
            i += 1 if inline else 2
            continue
        if arg in accepted.get("flags", ()):
            found[arg] = True
        elif arg.startswith("-") or not accepted.get("positionals", False):
            unexpected.append(arg)
        else:
            found["positionals"].append(arg)
        i += 1
    if unexpected:
        many = len(unexpected) > 1
        head = (
            "The following arguments were not expected: "
            if many
            else ("The following argument was not expected: ")
        )
        sys.stderr.write(head + " ".join(reversed(unexpected)) + "\n")
        sys.stderr.write("Run with --help for more information.\n")
        return CLI11_EXIT
    return found


def option(args: dict, *names: str) -> str | None:
    for name in names:
        if name in args:
            return args[name][-1]
    return None


def url_of(name: str) -> tuple[str, str]:
    version, build, subdir, _ = CATALOGUE[name]
    filename = f"{name}-{version}-{build}.conda"
    return f"{CHANNEL}/{subdir}/{filename}", hashlib.md5(filename.encode()).hexdigest()


def create(profile: dict, args: dict, entry: dict) -> int:
    prefix = Path(option(args, "-p", "--prefix") or "")
    spec_file = Path(option(args, "-f", "--file") or "")
    text = spec_file.read_text()
    lines = text.splitlines()
    variables: dict = {}
    pip_lines: list[str] = []
    if "@EXPLICIT" in lines:
        urls = [line for line in lines[lines.index("@EXPLICIT") + 1 :] if line.strip()]
        names = []
        for url in urls:
            if url.startswith("#"):
                continue
            name = next((n for n in CATALOGUE if url.split("#")[0] == url_of(n)[0]), None)
            if name is None:
                print(f"critical libmamba Could not find package for URL {url}", file=sys.stderr)
                return 1
            names.append(name)
    else:
        data = yaml.safe_load(text)
        names = []
        for dep in data.get("dependencies", []):
            if isinstance(dep, dict):
                pip_lines = [str(line) for line in dep.get("pip", [])]
                continue
            name = str(dep).split("::")[-1]
            for stop in "=<>!~ [":
                name = name.split(stop)[0]
            if name not in CATALOGUE:
                print(
                    "error    libmamba Could not solve for environment specs\n"
                    "    The following package could not be installed\n"
                    f"    └─ {name} does not exist (perhaps a typo or a missing channel).",
                    file=sys.stderr,
                )
                return 1
            names.append(name)
        variables = data.get("variables") or {}
    if not ("-y" in args or "--yes" in args):
        entry["prompted"] = True
        sys.stdout.write(f"\n  Transaction\n\n  Install: {len(names)} packages\n\n")
        sys.stdout.write("Confirm changes: [Y/n] ")
        sys.stdout.flush()
        answer = sys.stdin.readline().strip()
        if answer in ("n", "N", "no", "No"):
            print("Aborted.")
            return 1
    make_env(prefix)
    entry["installed"] = names
    for name in names:
        install_record(prefix, name)
    if variables and profile["state_variables"]:
        state = {"env_vars": {str(k): str(v) for k, v in variables.items()}}
        (prefix / "conda-meta" / "state").write_text(json.dumps(state))
    if pip_lines:
        with tempfile.NamedTemporaryFile("w", prefix="mambaf", dir=spec_file.parent) as reqs:
            reqs.write("\n".join(pip_lines) + "\n")
            reqs.flush()
            pip_args = [a.format(file=reqs.name) for a in profile["pip_args"]]
            command = [str(prefix / "bin" / "python"), "-m", "pip", "install", *pip_args]
            if subprocess.run(command, cwd=spec_file.parent).returncode != 0:
                print("critical libmamba pip failed to install packages", file=sys.stderr)
                return 1
    home_listing = Path.home() / ".conda" / "environments.txt"
    home_listing.parent.mkdir(parents=True, exist_ok=True)
    with home_listing.open("a") as handle:
        handle.write(f"{prefix}\n")
    return 0


def make_env(prefix: Path) -> None:
    """A venv of the base interpreter that sees its site-packages (pip included)."""
    base = getattr(sys, "_base_executable", sys.executable)
    command = [base, "-m", "venv", "--without-pip", "--system-site-packages", str(prefix)]
    subprocess.run(command, check=True)
    (prefix / "conda-meta").mkdir(exist_ok=True)
    (prefix / "conda-meta" / "history").write_text("")


def install_record(prefix: Path, name: str) -> None:
    version, build, subdir, files = CATALOGUE[name]
    for rel, text in files.items():
        path = prefix / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    url, md5 = url_of(name)
    record = {
        "name": name,
        "version": version,
        "build": build,
        "build_number": 0,
        "subdir": subdir,
        "channel": f"{CHANNEL}/{subdir}",
        "url": url,
        "md5": md5,
        "fn": url.rsplit("/", 1)[1],
        "files": sorted(files),
    }
    meta = prefix / "conda-meta" / f"{name}-{version}-{build}.json"
    meta.write_text(json.dumps(record))


def records(prefix: Path) -> list[dict]:
    return sorted(
        (json.loads(p.read_text()) for p in (prefix / "conda-meta").glob("*.json")),
        key=lambda r: r["name"],
    )


def pip_records(profile: dict, prefix: Path) -> list[dict]:
    """What libmamba's load_site_packages takes from `python -q -m pip inspect --local`."""
    if profile["list_pip"] == "none" or not any(r["name"] == "pip" for r in records(prefix)):
        return []
    out = subprocess.run(
        [str(prefix / "bin" / "python"), "-q", "-m", "pip", "inspect", "--local"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    found = []
    for item in json.loads(out).get("installed", []):
        installer = item.get("installer")
        if profile["list_pip"] == "requested":
            take = item.get("requested") is True and installer == "pip"
        else:
            take = installer in ("pip", "uv")
        if take:
            found.append(item["metadata"])
    return found


def listing(profile: dict, args: dict) -> int:
    prefix = Path(option(args, "-p", "--prefix") or "")
    conda = records(prefix)
    pip = pip_records(profile, prefix)
    if "--json" in args:
        rows = []
        for r in conda:
            row = {
                "base_url": CHANNEL,
                "build_number": 0,
                "build_string": r["build"],
                "channel": "conda-forge",
                "dist_name": f"{r['name']}-{r['version']}-{r['build']}",
                "name": r["name"],
                "platform": r["subdir"],
                "version": r["version"],
            }
            extra = {"url": r["url"], "md5": r["md5"], "sha256": ""}
            rows.append(row | {k: extra[k] for k in profile.get("list_keys_extra", ())})
        for m in pip:
            row = {
                "base_url": "https://pypi.org/",
                "build_number": 0,
                "build_string": "pypi_0",
                "channel": "pypi",
                "dist_name": f"{m['name']}-{m['version']}-pypi_0",
                "name": m["name"],
                "platform": "linux-x86_64",
                "version": m["version"],
            }
            rows.append(row | {k: "" for k in profile.get("list_keys_extra", ())})
        rows.sort(key=lambda row: row["name"])
        print(
            json.dumps({"packages": rows} if profile["list_json"] == "object" else rows, indent=4)
        )
        return 0
    if "--explicit" in args:  # only profiles whose list accepts it get here
        lines = [(r["name"], f"{r['url']}#{r['md5']}") for r in conda]
        lines += [(m["name"], "#") for m in pip]  # a pip record has no URL and no md5
        for _, line in sorted(lines):
            print(line)
        return 0
    print(f"List of packages in environment: {prefix}\n")
    for r in conda:
        print(f"  {r['name']}  {r['version']}  {r['build']}  conda-forge")
    return 0


def export(args: dict) -> int:
    prefix = Path(option(args, "-p", "--prefix") or "")
    if "-e" not in args and "--explicit" not in args:
        print("fake: only `env export --explicit` is recorded", file=sys.stderr)
        return 2
    print("# This file may be used to create an environment using:")
    print("# $ conda create --name <env> --file <this file>")
    print("# platform: linux-64")
    print("@EXPLICIT")
    for r in records(prefix):
        print(r["url"] if "--no-md5" in args else f"{r['url']}#{r['md5']}")
    return 0


def activate(args: dict) -> int:
    prefix = Path(option(args, "-p", "--prefix") or "")
    state_file = prefix / "conda-meta" / "state"
    state = json.loads(state_file.read_text()) if state_file.is_file() else {}
    print(f"export PATH='{prefix}/bin:{os.environ.get('PATH', '')}'")
    exports = {
        "CONDA_PREFIX": str(prefix),
        "CONDA_SHLVL": "1",
        "CONDA_DEFAULT_ENV": str(prefix),
        "CONDA_PROMPT_MODIFIER": f"({prefix.name}) ",
        **state.get("env_vars", {}),
    }
    for key, value in exports.items():
        print(f"export {key}='{value}'")
    for script in sorted((prefix / "etc" / "conda" / "activate.d").glob("*.sh")):
        print(f'. "{script}"')
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2:]))
