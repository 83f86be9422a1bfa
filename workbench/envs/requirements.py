"""pip's requirements-file grammar, as a `pip:` section or a requirements*.txt holds it:
logical lines, options, per-requirement options, -r/-c includes, local paths kept inside
the project."""

import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from workbench.errors import WorkbenchError, excerpt
from workbench.textfiles import read_text

# A requirements file is a few KB, like an environment.yml.
MAX_REQUIREMENTS_BYTES = 256 * 1024
# Characters that would split one requirement line into several (or hide in one).
CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029]")

# pip's requirements-file options (`pip help install`, "Requirements File Format"), with
# the long name workbench keys them by. Options that take a value:
PIP_VALUE_OPTIONS = {
    "-i": "--index-url",
    "--index-url": "--index-url",
    "--extra-index-url": "--extra-index-url",
    "-f": "--find-links",
    "--find-links": "--find-links",
    "--no-binary": "--no-binary",
    "--only-binary": "--only-binary",
    "--trusted-host": "--trusted-host",
    "--use-feature": "--use-feature",
    "-r": "--requirement",
    "--requirement": "--requirement",
    "-c": "--constraint",
    "--constraint": "--constraint",
    "-e": "--editable",
    "--editable": "--editable",
}
PIP_FLAG_OPTIONS = {
    "--pre": "--pre",
    "--no-index": "--no-index",
    "--prefer-binary": "--prefer-binary",
    "--require-hashes": "--require-hashes",
    "-Z": "--always-unzip",
    "--always-unzip": "--always-unzip",
}
# Options that follow a requirement on its line and apply to it alone.
PIP_REQUIREMENT_OPTIONS = ("--hash", "--config-settings", "--global-option", "--install-option")
PIP_INCLUDE_OPTIONS = {"--requirement", "--constraint"}
# Options whose value may be a local path (or a file: URL) rather than a name or host.
PIP_LOCATION_OPTIONS = {"--find-links", "--index-url", "--extra-index-url"}
VCS_SCHEMES = ("git+", "hg+", "svn+", "bzr+")
ARCHIVES = (".whl", ".tar.gz", ".tgz", ".tar.bz2", ".tbz", ".tar.xz", ".txz", ".tar", ".zip")
COMMENT = re.compile(r"(^|\s+)#.*$")
# -r files include others; a chain this deep is a loop or an attack, not a project.
MAX_INCLUDE_DEPTH = 16


@dataclass(frozen=True)
class PipLine:
    """One logical line of the `pip:` section (continuations joined, comment removed).

    kind is one of
      "requirement"  PEP 508, also `name @ URL`
      "url"          a bare URL: VCS (git+https, git+ssh, git+file, ...), archive or wheel
      "path"         a local directory, wheel or sdist; value as written (pip and uv take it
                     relative to the spec's folder, where workbench runs them)
      "--editable"   value: a path as written, or a VCS URL
      "--requirement", "--constraint": value: the file, resolved
      an option name ("--index-url", "--pre", ...), value "" for flags
      "invalid"      pip would refuse the line; value says why
    options holds per-requirement options (`--hash=sha256:...`). source is the file the
    line was read from (the spec, or a file it includes with -r).
    """

    text: str
    kind: str
    value: str
    line: int
    source: Path | None = None
    options: tuple[str, ...] = ()

    def where(self, default: Path) -> str:
        return f"{self.source or default}:{self.line}"


def requirements_lines(path: Path) -> list[tuple[str, int]]:
    """(line, number) of a requirements file; a control character is refused, naming it."""
    text = read_text(path, MAX_REQUIREMENTS_BYTES, "requirements file")
    entries = [(line, number) for number, line in enumerate(text.splitlines(), 1)]
    for line, number in entries:
        bad = CONTROL.search(line.strip())
        if bad:
            raise WorkbenchError(
                f"{path}:{number}: contains control character U+{ord(bad.group()):04X}"
            )
    return entries


class PipReader:
    """Reads pip: entries, and the files they include with -r/-c, the way pip reads a
    requirements file: continuation lines joined, comments dropped, options and
    per-requirement options recognised.

    Local paths (-r, -c, -e, -f, file: and git+file: URLs, ./pkg, wheels, sdists) must
    stay inside the project root: a spec is committed and shared, so it may not pull in
    files from elsewhere on the machine (a machine-wide wheel folder or index belongs in
    pip.conf, which is honoured). Requirement paths are relative to the spec's folder
    (where conda runs pip, and workbench runs uv); includes to the including file.
    """

    def __init__(self, root: Path, workdir: Path):
        self.root = root
        self.workdir = workdir
        self.included: list[PipLine] = []
        self.files: list[Path] = []

    def read(self, entries: list[tuple[str, int]], source: Path, depth: int = 0) -> list[PipLine]:
        parsed = (self._line(text, number, source, depth) for text, number in _logical(entries))
        return [line for line in parsed if line is not None]

    def _line(self, text: str, number: int, source: Path, depth: int) -> PipLine | None:
        stripped = COMMENT.sub("", text).strip()
        if not stripped:
            return None
        if stripped.startswith("-"):
            return self._option(text, stripped, number, source, depth)
        return self._requirement(text, stripped, number, source)

    def _option(self, text: str, stripped: str, number: int, source: Path, depth: int) -> PipLine:
        where = f"{source}:{number}"

        def invalid(reason: str) -> PipLine:
            return PipLine(text, "invalid", reason, number, source)

        try:
            words = shlex.split(stripped)
        except ValueError as exc:
            return invalid(f"cannot split it into words ({exc})")
        option, equals, inline = words[0].partition("=")
        values = ([inline] if equals else []) + words[1:]
        if option in PIP_FLAG_OPTIONS:
            if values:
                return invalid(f"{option} takes no value")
            return PipLine(text, PIP_FLAG_OPTIONS[option], "", number, source)
        if option not in PIP_VALUE_OPTIONS:
            known = ", ".join(sorted({*PIP_VALUE_OPTIONS.values(), *PIP_FLAG_OPTIONS.values()}))
            return invalid(f"unknown option '{excerpt(option)}' (requirements files take {known})")
        if len(values) != 1:
            return invalid(f"{option} takes exactly one value")
        kind, value = PIP_VALUE_OPTIONS[option], values[0]
        if kind in PIP_INCLUDE_OPTIONS:
            if _is_url(value) and not value.startswith("file:"):
                return invalid(f"{kind} from a URL: download the file into the project")
            path = unquote(urlsplit(value).path) if value.startswith("file:") else value
            resolved = self._local(path, source.parent, where, text)
            if not resolved.is_file():
                raise WorkbenchError(
                    f"{where}: '{excerpt(text)}': {resolved} is not an existing file"
                )
            self._include(resolved, depth, where)
            return PipLine(text, kind, str(resolved), number, source)
        if _is_url(value):
            self._check_file_url(value, where, text)
        elif kind == "--editable":
            self._local(_without_extras(value), self.workdir, where, text)
        elif kind in PIP_LOCATION_OPTIONS:
            self._local(value, source.parent, where, text)
        return PipLine(text, kind, value, number, source)

    def _include(self, path: Path, depth: int, where: str) -> None:
        if depth >= MAX_INCLUDE_DEPTH:
            raise WorkbenchError(
                f"{where}: -r/-c files nest more than {MAX_INCLUDE_DEPTH} deep (a file that "
                "includes itself?)"
            )
        self.files.append(path)
        self.included.extend(self.read(requirements_lines(path), path, depth + 1))

    def _requirement(self, text: str, stripped: str, number: int, source: Path) -> PipLine:
        """A requirement and the options that apply to it alone (`--hash=...`)."""
        from packaging.requirements import InvalidRequirement, Requirement

        where = f"{source}:{number}"
        words = stripped.split()
        first_option = next((i for i, w in enumerate(words) if w.startswith("-")), len(words))
        requirement = " ".join(words[:first_option])
        options = tuple(words[first_option:])
        unknown = [
            o for o in options if o.startswith("-") and not o.startswith(PIP_REQUIREMENT_OPTIONS)
        ]
        if unknown:
            reason = f"'{excerpt(unknown[0])}' is not an option of a requirement line"
            return PipLine(text, "invalid", reason, number, source)
        target = requirement.split(" ;")[0].strip()
        try:
            parsed: Requirement | None = Requirement(requirement)
            problem = ""
        except InvalidRequirement as exc:
            parsed, problem = None, str(exc).splitlines()[0]
        local_archive = target.endswith(ARCHIVES) and (self.workdir / target).is_file()
        if parsed is not None and not local_archive:
            if parsed.url:
                self._check_file_url(parsed.url, where, text)
            return PipLine(text, "requirement", requirement, number, source, options)
        if _is_url(target):
            self._check_file_url(target, where, text)
            return PipLine(text, "url", requirement, number, source, options)
        if target.startswith((".", "/", "~")) or "/" in target or target.endswith(ARCHIVES):
            self._local(_without_extras(target), self.workdir, where, text)
            return PipLine(text, "path", requirement, number, source, options)
        reason = f"not a requirement pip knows ({excerpt(problem, 200)})"
        return PipLine(text, "invalid", reason, number, source)

    def _check_file_url(self, url: str, where: str, text: str) -> None:
        """A file: URL (also git+file:) is a local path, held to the same rule as one."""
        parts = urlsplit(url)
        if parts.scheme == "file" or parts.scheme.endswith("+file"):
            path = unquote(parts.path)
            if parts.scheme != "file":
                path = path.rpartition("@")[0] or path  # git+file:///repo@ref
            self._local(path, self.workdir, where, text)

    def _local(self, value: str, base: Path, where: str, text: str) -> Path:
        return _local(value, base, self.root, where, text)


def _logical(entries: list[tuple[str, int]]) -> list[tuple[str, int]]:
    """Lines as pip reads them: a line ending in a backslash continues on the next one
    (numbered by its first line)."""
    joined: list[tuple[str, int]] = []
    pending: tuple[str, int] | None = None
    for text, number in entries:
        if pending is not None:
            text, number = pending[0] + " " + text.strip(), pending[1]
            pending = None
        if text.rstrip().endswith("\\"):
            pending = (text.rstrip()[:-1].rstrip(), number)
        else:
            joined.append((text, number))
    if pending is not None:
        joined.append(pending)
    return joined


def _without_extras(path: str) -> str:
    """`./pkg[docs,test]` -> `./pkg`."""
    return re.sub(r"\[[^\]]*\]$", "", path.strip())


def _is_url(value: str) -> bool:
    return "://" in value or value.startswith((*VCS_SCHEMES, "file:"))


def _local(value: str, base: Path, root: Path, where: str, text: str) -> Path:
    """value (relative to base) resolved, if it lies inside the project root; else a
    one-line error naming the line, the path and the rule."""
    if value.startswith("~"):
        reason = "'~' is not expanded in a spec"
    else:
        try:
            resolved = (base / value).resolve()
        except (OSError, ValueError, RuntimeError) as exc:  # NUL byte, symlink loop
            raise WorkbenchError(f"{where}: '{excerpt(text)}': not a usable path: {exc}") from None
        if resolved.is_relative_to(root):
            return resolved
        reason = f"{resolved} is outside the project ({root})"
    raise WorkbenchError(
        f"{where}: '{excerpt(text)}': {reason}; local paths in a spec must stay inside the "
        "project (a machine-wide wheel folder or index belongs in pip.conf)"
    )
