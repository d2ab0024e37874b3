# faq_tf: one entry point for setting up, testing and running.
#   make test    create .venv (if needed), install faq_tf with its torch extra, run ruff and the test
#                suite (with tflite-support's metadata schema reader in .venv/reference, for
#                test_metadata.py, and torchvision, for test_import_torch.py)
#   make demo    the main job: FAQ w8a8 + w4a4 on Fashion-MNIST, integer export, LiteRT evaluation
#   make bench   the side-by-side benchmark suite (FAQ vs fp32 controls, PTQ, tfmot QAT)
#   make bazel-test   the same tests through Bazel (Debian's bazel-bootstrap, offline)
#   make apps    quantize every named keras.applications model under w8a8 and w4a4

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# tflite-support's generated reader of the TFLite metadata schema, with which tests/test_metadata.py
# checks the metadata export_tflite writes. Only this pure-Python file (it needs flatbuffers): the
# tflite-support package itself does not install here (it pins protobuf < 4; its compiled parts are numpy 1's).
REFERENCE := $(VENV)/reference/metadata_schema_py_generated.py
REFERENCE_SHA256 := bcd857b0f5af7d74ec948e882d4d8e31f4bdd41dece562110d1ffcbd8453bf50

# The torch extra (torch + torchvision, several GB): test_import_torch.py checks imported weights
# against torchvision's own models. Its own stamp, so that `make demo` does not need it.
TORCH_STAMP := $(VENV)/.installed-torch

.PHONY: test demo bench bazel-test bazel-tool apps lint data clean

$(STAMP): setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

$(TORCH_STAMP): setup.py | $(STAMP)
	$(PY) -m pip install -q -e ".[dev,torch]"
	touch $(TORCH_STAMP)

# Not part of $(STAMP), so that existing environments get it too. The wheel's platform is pinned
# (the file is the same in every wheel) so that any host can download it.
$(REFERENCE): | $(STAMP)
	@mkdir -p $(dir $@)
	@tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && \
	$(PY) -m pip download -q --no-deps --only-binary=:all: --platform manylinux2014_x86_64 \
	  --python-version 3.11 --implementation cp --abi cp311 tflite-support==0.4.4 -d "$$tmp" && \
	$(PY) -c 'import glob, hashlib, sys, zipfile; \
	wheel, = glob.glob(sys.argv[1] + "/tflite_support-0.4.4-*.whl"); \
	data = zipfile.ZipFile(wheel).read("tensorflow_lite_support/metadata/metadata_schema_py_generated.py"); \
	hashlib.sha256(data).hexdigest() == sys.argv[3] or sys.exit("tflite-support 0.4.4: unexpected metadata_schema_py_generated.py"); \
	open(sys.argv[2], "wb").write(data)' "$$tmp" "$@.part" $(REFERENCE_SHA256) && \
	mv "$@.part" "$@" && echo "extracted $@ from tflite-support 0.4.4"

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

test: $(STAMP) $(TORCH_STAMP) $(REFERENCE) bazel-tool lint
	$(PY) -m pytest -q tests

demo: $(STAMP) data
	$(PY) -m benchmarks.demo --out runs/demo

bench: $(STAMP) data
	$(PY) -m benchmarks.suite --out runs/bench

bazel-test: $(STAMP) $(REFERENCE) bazel-tool
	bazel test //tests/...

apps: $(STAMP)
	$(PY) -m scripts.check_applications --out runs/applications.json

clean:
	rm -rf $(VENV) runs .pytest_cache
