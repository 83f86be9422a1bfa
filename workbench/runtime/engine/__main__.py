"""`python -m workbench.runtime.engine`: serve one model (see workbench.runtime.engine.server)."""

import sys

from workbench.runtime.engine.server import main

sys.exit(main())
