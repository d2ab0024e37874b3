# faq_tf: one entry point for setting up, testing and running.
#   make test    create .venv (if needed), install faq_tf, run ruff and the test suite
#   make demo    the Fashion-MNIST FAQ demo (quantization-core stage: accuracy after calibration)
#   make apps    quantize every named keras.applications model under w8a8 and w4a4

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: test demo apps lint data clean

$(STAMP): setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

data:
	@if [ ! -d /usr/share/datasets/fashion-mnist ]; then \
	  if command -v apt-get >/dev/null 2>&1; then \
	    (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist) || \
	    (sudo apt-get update -qq && sudo apt-get install -y -qq dataset-fashion-mnist); \
	  else echo "Install Fashion-MNIST IDX files and pass their folder with --data_dir"; fi; \
	fi

lint: $(STAMP)
	$(VENV)/bin/ruff check faq_tf export_tflite tests benchmarks scripts
	$(VENV)/bin/ruff format --check faq_tf export_tflite tests benchmarks scripts setup.py

test: $(STAMP) lint
	$(PY) -m pytest -q tests

demo: $(STAMP) data
	$(PY) benchmarks/core_accuracy.py --out runs/core_accuracy

apps: $(STAMP)
	$(PY) scripts/check_applications.py --out runs/applications.json

clean:
	rm -rf $(VENV) runs .pytest_cache
