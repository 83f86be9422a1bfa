"""The machine's pip configuration, read as pip reads it, turned into uv options.

uv ignores pip.conf; without this, a machine whose pip takes torch from a local
find-links folder or index would get a multi-GB CUDA build from PyPI under uv.
"""

import configparser
import io
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

KEYS = ("index-url", "extra-index-url", "find-links", "constraint", "no-index")


@dataclass(frozen=True)
class PipConfig:
    index_url: str | None = None
    extra_index_urls: tuple[str, ...] = ()
    find_links: tuple[str, ...] = ()
    constraints: tuple[str, ...] = ()
    no_index: bool = False
    sources: tuple[str, ...] = field(default=(), compare=False)

    def uv_args(self) -> list[str]:
        """uv pip options equivalent to this configuration."""
        args: list[str] = []
        if self.no_index:
            args.append("--no-index")
        if self.index_url:
            args += ["--index-url", self.index_url]
        for url in self.extra_index_urls:
            args += ["--extra-index-url", url]
        for link in self.find_links:
            args += ["--find-links", link]
        for constraint in self.constraints:
            args += ["--constraints", constraint]
        if self.extra_index_urls:
            # pip takes the best version across all indexes; uv's default stops at the first
            # index that has the package, which picks stale local mirrors.
            args += ["--index-strategy", "unsafe-best-match"]
        return args


def config_files(environ: dict[str, str] | None = None) -> list[Path]:
    """pip's configuration files, lowest priority first (global, user, site, PIP_CONFIG_FILE)."""
    environ = os.environ if environ is None else environ
    if environ.get("PIP_CONFIG_FILE") == os.devnull:
        return []
    xdg_dirs = environ.get("XDG_CONFIG_DIRS") or "/etc/xdg"
    files = [Path(d) / "pip" / "pip.conf" for d in reversed(xdg_dirs.split(os.pathsep)) if d]
    files.append(Path("/etc/pip.conf"))
    home = Path(environ.get("HOME") or Path.home())
    files.append(home / ".pip" / "pip.conf")
    config_home = Path(environ.get("XDG_CONFIG_HOME") or home / ".config")
    files.append(config_home / "pip" / "pip.conf")
    files.append(Path(sys.base_prefix) / "pip.conf")
    if environ.get("PIP_CONFIG_FILE"):
        files.append(Path(environ["PIP_CONFIG_FILE"]))
    return files


def read(environ: dict[str, str] | None = None) -> PipConfig:
    """Merge pip's config files and PIP_* variables the way pip does (later wins per key)."""
    environ = os.environ if environ is None else environ
    values: dict[str, str] = {}
    sources: list[str] = []
    for path in config_files(environ):
        if not path.is_file():
            continue
        parser = configparser.RawConfigParser()
        try:
            parser.read(path)
        except configparser.Error:
            continue  # pip refuses such a file loudly; uv would never see it either
        for section in ("global", "install"):
            if parser.has_section(section):
                for key in KEYS:
                    if parser.has_option(section, key):
                        values[key] = parser.get(section, key)
                        sources.append(str(path))
    for key in KEYS:
        env_key = "PIP_" + key.upper().replace("-", "_")
        if environ.get(env_key):
            values[key] = environ[env_key]
            sources.append(env_key)
    return PipConfig(
        index_url=values.get("index-url", "").strip() or None,
        extra_index_urls=tuple(values.get("extra-index-url", "").split()),
        find_links=tuple(values.get("find-links", "").split()),
        constraints=tuple(values.get("constraint", "").split()),
        no_index=values.get("no-index", "").strip().lower() in ("1", "true", "yes", "on"),
        sources=tuple(dict.fromkeys(sources)),
    )


def merged_text(environ: dict[str, str] | None = None) -> str:
    """This machine's pip configuration as one pip.conf (for a build that must install as
    pip here would): its files merged in pip's order, PIP_* variables on top, as they win
    in pip too."""
    environ = dict(os.environ if environ is None else environ)
    parser = configparser.RawConfigParser()
    parser.read([p for p in config_files(environ) if p.is_file()])
    from_env = {
        name[4:].lower().replace("_", "-"): value
        for name, value in environ.items()
        if name.startswith("PIP_") and name != "PIP_CONFIG_FILE"
    }
    for section in parser.sections():
        for key in from_env:
            parser.remove_option(section, key)
    if from_env and not parser.has_section("global"):
        parser.add_section("global")
    for key, value in from_env.items():
        parser.set("global", key, value)
    out = io.StringIO()
    parser.write(out)
    return out.getvalue()
