"""Start python in an activated conda env, as a terminal would: the kernel launcher of
conda, mamba and micromamba envs (and how the GPU check starts python there).

    PREFIX/bin/python -m workbench.runtime.activate FLAVOUR TOOL PREFIX -- ARGS...

evaluates the activation script TOOL prints for PREFIX in bash (etc/conda/activate.d
scripts, PREFIX/bin first on PATH, CONDA_PREFIX, the env's variables), as nb_conda_kernels
does, then runs PREFIX/bin/python ARGS. Each step replaces the one before (exec), so the
kernel keeps the pid Jupyter started and sends interrupts to. The kernelspec's argv stays
`[python, -m, module, ...]`, the form editors such as VS Code expect of a Python kernel.
"""

from __future__ import annotations

import os
import shutil
import sys

from workbench.runtime import EXIT_USAGE

# How each flavour prints a bash activation script: conda (and mamba 1.x's conda) and
# micromamba (and mamba 2, which is micromamba under another name).
ACTIVATE = {
    "conda": 'shell.posix activate "$1"',
    "micromamba": 'shell activate -s bash -p "$1"',
}
# $0 is the tool, $1 the prefix, then python's arguments.
SCRIPT = (
    'act=$("$0" {activate}) || {{ echo "workbench: activating $1 with $0 failed" >&2; exit 1; }}'
    '; eval "$act"; p=$1; shift; exec "$p/bin/python" "$@"'
)


def command(flavour: str, tool: str, prefix: str, args: list[str]) -> list[str]:
    """The bash command line that activates prefix with tool and execs its python."""
    bash = shutil.which("bash") or "/bin/bash"
    return [bash, "-c", SCRIPT.format(activate=ACTIVATE[flavour]), tool, prefix, *args]


def main(argv: list[str]) -> int:
    if len(argv) < 4 or argv[3] != "--" or argv[0] not in ACTIVATE:
        sys.stderr.write(
            "usage: python -m workbench.runtime.activate {conda,micromamba} TOOL PREFIX -- "
            "ARGS...\n"
        )
        return EXIT_USAGE
    flavour, tool, prefix = argv[:3]
    cmd = command(flavour, tool, prefix, argv[4:])
    os.execv(cmd[0], cmd)
    return 0  # not reached: execv replaces this process


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
