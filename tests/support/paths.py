"""Where the checkout and the test data are, whichever folder a test module sits in."""

from pathlib import Path

TESTS = Path(__file__).resolve().parent.parent
REPO = TESTS.parent
SPECS = TESTS / "data" / "specs"
FAKES = TESTS / "fakes"
TEXTGEN = REPO / ".workbench" / "envs" / "textgen" / "bin" / "python"
EMBED = REPO / ".workbench" / "envs" / "embed" / "bin" / "python"
VISION = REPO / ".workbench" / "envs" / "vision" / "bin" / "python"
