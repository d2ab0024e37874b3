# faq_tf: one entry point for setting up, testing and running.
#   make test    create .venv (if needed), install faq_tf, run ruff and the test suite
#   make demo    the main job: FAQ w8a8 + w4a4 on Fashion-MNIST, integer export, LiteRT evaluation
#   make bench   the side-by-side benchmark suite (FAQ vs fp32 controls, PTQ, tfmot QAT)
#   make bazel-test   the same tests through Bazel (Debian's bazel-bootstrap, offline)
#   make apps    quantize every named keras.applications model under w8a8 and w4a4

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: test demo bench bazel-test bazel-tool apps lint data clean

$(STAMP): setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

data:
	@if [ ! -d /usr/share/datasets/fashion-mnist ]; then \
	  if command -v apt-get >/dev/null 2>&1; then \
	    (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist) || \
	    (sudo -n apt-get update -qq && sudo -n apt-get install -y -qq dataset-fashion-mnist) || \
	    echo "apt-get unavailable: faq_tf falls back to TFDS (downloads Fashion-MNIST once)"; \
	  else echo "no apt-get: faq_tf falls back to TFDS (downloads Fashion-MNIST once)"; fi; \
	fi

bazel-tool:
	@command -v bazel >/dev/null 2>&1 || ( command -v apt-get >/dev/null 2>&1 && \
	  ( (apt-get install -y -qq bazel-bootstrap || (apt-get update -qq && apt-get install -y -qq bazel-bootstrap)) || \
	    sudo -n apt-get install -y -qq bazel-bootstrap ) ) || \
	  echo "bazel not installed: the Bazel test will be skipped (apt-get install bazel-bootstrap)"

lint: $(STAMP)
	$(VENV)/bin/ruff check faq_tf export_tflite tests benchmarks scripts
	$(VENV)/bin/ruff format --check faq_tf export_tflite tests benchmarks scripts setup.py

test: $(STAMP) bazel-tool lint
	$(PY) -m pytest -q tests

demo: $(STAMP) data
	$(PY) -m benchmarks.demo --out runs/demo

bench: $(STAMP) data
	$(PY) -m benchmarks.suite --out runs/bench

bazel-test: $(STAMP) bazel-tool
	bazel test //tests/...

apps: $(STAMP)
	$(PY) -m scripts.check_applications --out runs/applications.json

clean:
	rm -rf $(VENV) runs .pytest_cache
