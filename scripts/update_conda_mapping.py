#!/usr/bin/env python3
"""Regenerate workbench/envs/data/conda_pypi.json.gz from prefix.dev's parselmouth mapping.

Source: https://github.com/prefix-dev/parselmouth (BSD-3-Clause), the conda -> PyPI name
mapping that pixi uses. parselmouth opens every package file of a channel and records
the PyPI distributions (``*.dist-info`` / ``*.egg-info``) it ships; a conda name whose
builds ship none is recorded as ``null``. It commits the result under ``files/``:

* ``files/compressed_mapping.json``: conda-forge, ``{conda name: pypi name | null}``,
  one name per package: the file pixi downloads (also served as
  https://conda-mapping.prefix.dev/compressed-v0/compressed_mapping.json).
* ``files/v0/<channel>/compressed_mapping.json``: ``{conda name: [pypi names] | null}``,
  every PyPI name seen in any build of the package (sorted).

The output keeps, per channel, ``null`` (seen on the channel, ships no Python
distribution), a string (the one PyPI name), or a list (several names were seen; the
first is the one to install: pixi's own pick for conda-forge, else the conda name if it
is among them, else the list as published). Output is deterministic for a given
parselmouth commit: sorted keys, compact JSON, gzip with mtime 0 and no file name.

Usage (internet, GitHub reachable):

    python scripts/update_conda_mapping.py               # newest commit of main
    python scripts/update_conda_mapping.py --rev <sha>   # a pinned commit

Offline, from a clone (or bare git dir) of prefix-dev/parselmouth:

    git clone --filter=blob:none https://github.com/prefix-dev/parselmouth /tmp/pm
    python scripts/update_conda_mapping.py --git-dir /tmp/pm [--rev main]

``--check`` rebuilds in memory and exits 1 if the committed files differ (no writes).
Only the standard library is used.
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import re
import subprocess
import sys
import urllib.request
from pathlib import Path

REPO = "prefix-dev/parselmouth"
REPO_URL = f"https://github.com/{REPO}"
LICENSE = "BSD-3-Clause"
LICENSE_HOLDER = "Copyright (c) 2023, prefix.dev GmbH"
PIXI_FILE = "files/compressed_mapping.json"
CHANNEL_FILE = "files/v0/{channel}/compressed_mapping.json"
CHANNELS = ("conda-forge", "pytorch", "bioconda")
FORMAT = 1

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "workbench" / "envs" / "data" / "conda_pypi.json.gz"
SOURCE_MD = OUT.with_name("conda_pypi.SOURCE.md")


def normalize(name: str) -> str:
    """PEP 503 normalized name."""
    return re.sub(r"[-_.]+", "-", name).lower()


# --- reading the source -------------------------------------------------------------


class GitSource:
    """Files of a local clone / bare git dir of parselmouth at one revision."""

    def __init__(self, git_dir: Path, rev: str):
        self.git = ["git", f"--git-dir={self._git_dir(git_dir)}"]
        self.commit = self._run("rev-parse", f"{rev}^{{commit}}").strip()
        self.date = self._run("show", "-s", "--format=%cI", self.commit).strip()
        self.where = f"git dir {git_dir}"

    @staticmethod
    def _git_dir(path: Path) -> Path:
        return path / ".git" if (path / ".git").exists() else path

    def _run(self, *args: str) -> str:
        return subprocess.run([*self.git, *args], check=True, capture_output=True, text=True).stdout

    def read(self, path: str) -> bytes:
        return subprocess.run(
            [*self.git, "show", f"{self.commit}:{path}"], check=True, capture_output=True
        ).stdout

    def file_date(self, path: str) -> str:
        return self._run("log", "-1", "--format=%cI", self.commit, "--", path).strip()


class GitHubSource:
    """Files of parselmouth on GitHub at one revision (resolved to a commit first)."""

    def __init__(self, rev: str):
        info = json.loads(_get(f"https://api.github.com/repos/{REPO}/commits/{rev}"))
        self.commit = info["sha"]
        self.date = info["commit"]["committer"]["date"]
        self.where = "GitHub"

    def read(self, path: str) -> bytes:
        return _get(f"https://raw.githubusercontent.com/{REPO}/{self.commit}/{path}")

    def file_date(self, path: str) -> str:
        url = (
            f"https://api.github.com/repos/{REPO}/commits?sha={self.commit}&path={path}&per_page=1"
        )
        return json.loads(_get(url))[0]["commit"]["committer"]["date"]


def _get(url: str) -> bytes:
    request = urllib.request.Request(url, headers={"User-Agent": "workbench-update-conda-mapping"})
    with urllib.request.urlopen(request, timeout=120) as response:
        return response.read()


# --- building the data ---------------------------------------------------------------


def merge_channel(
    channel: str, names: dict[str, list[str] | None], pixi: dict[str, str | None] | None
) -> dict[str, str | list[str] | None]:
    """One channel's table: null, one name, or several names with the one to install first."""
    table: dict[str, str | list[str] | None] = {}
    for conda, pypi in names.items():
        seen = sorted(set(pypi or []))
        pick = pixi.get(conda) if pixi is not None else None
        if pick is None and seen:
            pick = normalize(conda) if normalize(conda) in seen else seen[0]
        if pick is None:
            table[conda] = None
        elif seen in ([], [pick]):
            table[conda] = pick
        else:
            table[conda] = [pick, *(name for name in seen if name != pick)]
    if pixi is not None:
        for conda, pick in pixi.items():  # names only in pixi's file (none so far)
            table.setdefault(conda, pick)
    return table


def build(source) -> tuple[bytes, str]:
    pixi = json.loads(source.read(PIXI_FILE))
    channels, files = {}, {}
    for channel in CHANNELS:
        path = CHANNEL_FILE.format(channel=channel)
        names = json.loads(source.read(path))
        channels[channel] = merge_channel(
            channel, names, pixi if channel == "conda-forge" else None
        )
        files[path] = {"last_changed": source.file_date(path), "entries": len(names)}
    files[PIXI_FILE] = {"last_changed": source.file_date(PIXI_FILE), "entries": len(pixi)}
    meta = {
        "source": REPO_URL,
        "commit": source.commit,
        "commit_date": source.date,
        "license": LICENSE,
        "license_holder": LICENSE_HOLDER,
        "files": files,
        "generator": "scripts/update_conda_mapping.py",
        "values": (
            "null: seen on the channel, no build ships a Python distribution; "
            "string: the PyPI name; list: several PyPI names seen across builds, "
            "the first is the one to install (conda-forge: pixi's pick)"
        ),
    }
    document = {"format": FORMAT, "meta": meta, "channels": channels}
    text = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    buffer = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buffer, compresslevel=9, mtime=0) as gz:
        gz.write(text.encode("ascii"))
    license_text = source.read("LICENSE").decode("utf-8").strip()
    return buffer.getvalue(), source_md(meta, channels, license_text)


def source_md(meta: dict, channels: dict, license_text: str) -> str:
    rows = "\n".join(
        f"| `{path}` | {info['entries']} | {info['last_changed']} |"
        for path, info in sorted(meta["files"].items())
    )
    counts = "\n".join(
        f"| {channel} | {len(table)} | {sum(v is None for v in table.values())} |"
        f" {sum(isinstance(v, list) for v in table.values())} |"
        for channel, table in channels.items()
    )
    return f"""# conda_pypi.json.gz: conda package name -> PyPI name

Generated by `scripts/update_conda_mapping.py`; do not edit by hand.

- Source: {meta["source"]} (the conda -> PyPI mapping pixi uses)
- Commit: `{meta["commit"]}` ({meta["commit_date"]})
- License of the data: {meta["license"]} ({meta["license_holder"]}); it allows
  redistribution with the notice below kept (copied from the repository's LICENSE at
  that commit)

| source file | entries | last changed |
| --- | --- | --- |
{rows}

| channel | names | null (no PyPI distribution) | several PyPI names |
| --- | --- | --- | --- |
{counts}

Format: gzip'd JSON
`{{"format": {FORMAT}, "meta": {{...}}, "channels": {{channel: {{conda name: value}}}}}}`.

- {meta["values"].replace("; ", chr(10) + "- ")}
- a name absent from a channel's table was not seen on that channel by parselmouth
  (it lives on another channel, or is newer than the commit above)

Update (needs GitHub): `python scripts/update_conda_mapping.py [--rev SHA]`, or offline
from a clone: `python scripts/update_conda_mapping.py --git-dir PATH [--rev REV]`;
`--check` tells whether the committed files match a given revision.

## License of the data

```
{license_text}
```
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--git-dir", type=Path, help="a clone or bare git dir of parselmouth")
    parser.add_argument("--rev", default="main", help="branch, tag or commit (default: main)")
    parser.add_argument("--check", action="store_true", help="compare, do not write")
    args = parser.parse_args(argv)

    source = GitSource(args.git_dir, args.rev) if args.git_dir else GitHubSource(args.rev)
    data, markdown = build(source)
    if args.check:
        same = OUT.exists() and OUT.read_bytes() == data and SOURCE_MD.read_text() == markdown
        print(
            f"{OUT.relative_to(ROOT)}: {'up to date' if same else 'differs'} "
            f"(parselmouth {source.commit[:12]})"
        )
        return 0 if same else 1
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_bytes(data)
    SOURCE_MD.write_text(markdown)
    print(
        f"wrote {OUT.relative_to(ROOT)} ({len(data)} bytes) from parselmouth "
        f"{source.commit} ({source.date}, {source.where})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
