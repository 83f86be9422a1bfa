"""Workbench commands run for the Lab extension: in process for what only reads (the same
parser and cmd_* handler as the CLI, so the answer is the CLI's --json envelope), and the
project a Lab serves."""

from pathlib import Path

from workbench import cli, results
from workbench.errors import USAGE, WorkbenchError


def envelope(argv: list[str], project: Path) -> dict:
    """What `workbench ARGV --json --project PROJECT` prints, without a subprocess."""
    command = " ".join(a for a in argv if not a.startswith("-"))[:60]
    try:
        args = cli.parser().parse_args([*argv, "--json", "--project", str(project)])
    except SystemExit:
        error = WorkbenchError(f"bad arguments for `workbench {' '.join(argv)}`", USAGE)
        return results.error_envelope(error, command)
    command = " ".join(filter(None, (args.command, getattr(args, "verb", None))))
    try:
        return results.envelope(cli.dispatch(args), command)
    except WorkbenchError as exc:
        return results.error_envelope(exc, command)


def project_root(root_dir: str | Path) -> Path | None:
    """The project of a Lab whose root folder is root_dir: the nearest workbench.toml at or
    above it; None when there is none (the routes then say so)."""
    from workbench import project

    try:
        return project.find_root(Path(root_dir))
    except WorkbenchError:
        return None
