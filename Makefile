# Two commands on a fresh machine: `make demo` and `make test` (see README.md).
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
BUILD := .build
DEMO_OUT ?= demo-out
STAMP := $(VENV)/.installed

.PHONY: venv demo test test-all fuzz bench speech fonts clean gpu-wheels gpu-check-dry-run

venv: $(STAMP)

# Re-install when pyproject.toml changes; `pip install -e` is a no-op when nothing changed.
$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -e '.[dev]'
	@touch $(STAMP)

# espeak-ng gives real speech to sample clips and speech tests; without it they use tones/skip.
speech:
	@command -v espeak-ng >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get install -y -qq espeak-ng >/dev/null 2>&1 || \
	     (apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq espeak-ng >/dev/null 2>&1)) || \
	    echo "espeak-ng could not be installed: samples use tones, speech-quality tests skip"; \
	  else echo "espeak-ng not installed: samples use tones, speech-quality tests skip"; fi; }

# Fonts for the OCR tests' rendered text (Latin and CJK); without them those cases skip.
FONTS := /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf /usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf \
         /usr/share/fonts/truetype/wqy/wqy-microhei.ttc
fonts:
	@ls $(FONTS) >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get install -y -qq fonts-dejavu-core fonts-liberation fonts-wqy-microhei >/dev/null 2>&1 || \
	     (apt-get update -qq >/dev/null 2>&1 && \
	      apt-get install -y -qq fonts-dejavu-core fonts-liberation fonts-wqy-microhei >/dev/null 2>&1)) || \
	    echo "fonts could not be installed: OCR cases with those fonts skip"; \
	  else echo "fonts not installed: OCR cases with those fonts skip"; fi; }

$(BUILD)/tiny/tiny.yaml: $(STAMP)
	$(VENV)/bin/extract models make-tiny $(BUILD)/tiny

$(BUILD)/samples/manifest.jsonl: $(STAMP) | speech
	$(VENV)/bin/extract samples make $(BUILD)/samples

demo: $(BUILD)/tiny/tiny.yaml $(BUILD)/samples/manifest.jsonl
	$(VENV)/bin/extract run --input $(BUILD)/samples/manifest.jsonl --output $(DEMO_OUT) \
	  --config jobs/configs/local.yaml --config $(BUILD)/tiny/tiny.yaml

test: venv speech fonts
	$(PY) -m pytest -m "not slow and not gpu" -q

test-all: venv speech fonts
	$(PY) -m pytest -q

# Mutation fuzz tier: every mutant of tests/mutate.py through the decode stage (a fixed-seed slice runs in `make test`).
fuzz: venv
	$(PY) -m pytest -q tests/test_fuzz_decode.py tests/test_fuzz.py

bench: venv speech
	$(PY) -m bench.run

# Another Python (3.12): a fresh venv of it under .build/py<V>/, the project installed
# there, and the demo run with it. pythonV on the PATH or a pyenv install of it (pyenv has both
# here); without either it says so and is skipped (exit 0).
py%-check:
	@py=$$(python$* -c 'import sys; print(sys.executable)' 2>/dev/null || \
	       ls -d $${PYENV_ROOT:-$$HOME/.pyenv}/versions/$*.*/bin/python$* 2>/dev/null | sort -V | tail -1); \
	if [ -z "$$py" ]; then echo "no Python $* (python$* or a pyenv version): py$*-check skipped"; exit 0; fi; \
	echo "py$*-check with $$py"; \
	$(MAKE) --no-print-directory demo PYTHON=$$py VENV=$(BUILD)/py$*/venv BUILD=$(BUILD)/py$* \
	  DEMO_OUT=$(BUILD)/py$*/demo-out && \
	$(BUILD)/py$*/venv/bin/python -c 'import sys; print("py$*-check: the demo ran on Python", sys.version.split()[0])'

# The wheels bench/gpu_check.sh installs on the bare GPU machine (cp312; fails above 60 MiB).
gpu-wheels: venv
	$(PY) -m bench.gpu_wheels .whl/gpu

# bench/gpu_check.sh on this CPU with tiny models: tests the script (tests/test_gpu_check.py runs it too).
gpu-check-dry-run: venv
	bash bench/gpu_check.sh --dry-run

clean:
	rm -rf $(BUILD) $(DEMO_OUT) .pytest_cache
