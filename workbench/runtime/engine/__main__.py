"""`python -m workbench.runtime.engine`: serve one model (workbench.runtime.engine.commandline)."""

import sys

from workbench.runtime.engine.commandline import main

sys.exit(main())
