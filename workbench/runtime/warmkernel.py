"""Inside a warm kernel (one a sweep or test slot keeps across runs): the clean state of
a fresh kernel, taken once right after it started, and put back after every run.

snapshot() records the user namespace, the modules loaded, sys.path, os.environ, the
warnings filters and the working directory; restore() drops every variable the run
defined, unloads the modules it imported from outside the env (the project's own code,
which the next run imports afresh; libraries stay loaded, which is what keeps the kernel
warm, but their names are gone with the namespace), and puts the rest back; it also
closes matplotlib figures and hands cached GPU memory back. Library-level global state
(RNG seeds, a library's settings) is what a fresh kernel would reset and this does not.

Called by the slot as hidden, silent executions; stdlib only, Python 3.8+ syntax.
"""

import gc
import os
import sys
import warnings

_saved = {}


def _env_roots():
    roots = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
    return tuple(os.path.realpath(root) + os.sep for root in roots)


def snapshot():
    """Remember the fresh kernel's state (once, before any run)."""
    shell = get_ipython()  # noqa: F821 - defined in every IPython kernel
    _saved.update(
        modules=set(sys.modules),
        path=list(sys.path),
        environ=dict(os.environ),
        filters=list(warnings.filters),
        cwd=os.getcwd(),
        names=set(shell.user_ns),
    )
    # What exists now lives as long as the kernel: later collections skip it, so that
    # restore() pays only for what a run left behind, not for a full collection.
    gc.collect()
    gc.freeze()


def _is_env_module(name, roots):
    """Loaded from the env (its packages, the stdlib) or built in, not the user's code. A
    module with no file of its own (torch._C._dynamo, which torch's extension creates)
    belongs where its parent package comes from."""
    module = sys.modules.get(name)
    spec = getattr(module, "__spec__", None)
    if getattr(spec, "origin", None) in ("built-in", "frozen"):
        return True
    path = getattr(module, "__file__", None) or next(iter(getattr(module, "__path__", [])), None)
    if path:
        return os.path.realpath(path).startswith(roots)
    parent = name.rpartition(".")[0]
    return bool(parent) and parent in sys.modules and _is_env_module(parent, roots)


def restore():
    """Put the kernel back as snapshot() found it; returns the names of the modules it
    unloaded."""
    shell = get_ipython()  # noqa: F821
    # A new history session, as execution counts start at 1 again; this collects garbage
    # too (IPython's displayhook.flush)
    shell.reset(new_session=True)
    for name in set(shell.user_ns) - _saved["names"]:
        del shell.user_ns[name]
    roots = _env_roots()
    unloaded = [
        name for name in set(sys.modules) - _saved["modules"] if not _is_env_module(name, roots)
    ]
    for name in unloaded:
        del sys.modules[name]
    sys.path[:] = _saved["path"]
    os.environ.clear()
    os.environ.update(_saved["environ"])
    warnings.filters[:] = _saved["filters"]
    os.chdir(_saved["cwd"])
    pyplot = sys.modules.get("matplotlib.pyplot")
    if pyplot is not None:
        pyplot.close("all")
        gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        torch.cuda.empty_cache()
    gc.freeze()  # what survived (libraries a run imported) stays: skip it from now on
    return sorted(unloaded)


def chdir(folder):
    """Into the next run's notebook folder: its relative paths start there."""
    os.chdir(folder)
