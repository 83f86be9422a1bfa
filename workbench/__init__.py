"""workbench: env specs to isolated envs, locks, Jupyter kernels, recorded runs and services.

This module stays stdlib-only: every env links it with workbench/runtime/ (see there), so
notebooks in any env kernel can `from workbench import record`.
"""

from workbench.runtime.record import record

__version__ = "0.1.0"
__all__ = ["record"]
