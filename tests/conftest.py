"""Suite-wide settings; the helpers live in tests/support, its fixtures arrive as plugins."""

from hypothesis import HealthCheck, settings

pytest_plugins = [
    "tests.support.projects",  # project, gradio_project, demo_envs
    "tests.support.containers",  # podman, base_image
    "tests.support.realconda",  # real_conda
]

# Fuzz tests (tests/reliability/) keep no example database (nothing written into the
# checkout) and no per-example deadline (a real CLI call takes tens of milliseconds). They
# draw the same inputs on every run, so CI is reproducible; `--hypothesis-profile=explore`
# draws new ones on each run to hunt for bugs.
_fuzz = {
    "database": None,
    "deadline": None,
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
}
settings.register_profile("workbench", derandomize=True, **_fuzz)
settings.register_profile("explore", **_fuzz)
settings.load_profile("workbench")
