# Two commands on a fresh machine: `make demo` and `make test` (see README.md).
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
BUILD := .build
DEMO_OUT ?= demo-out
STAMP := $(VENV)/.installed

.PHONY: venv demo test test-all fuzz bench speech fonts sounds-media clean

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

# Real music and short speech (Debian drascula-music, pocketsphinx-testdata) for the same-sound and
# music-vs-speech tests and benchmark; without them those cases skip.
sounds-media:
	@ls /usr/share/scummvm/drascula/audio/track1.ogg /usr/share/pocketsphinx/test/data/goforward.raw >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get install -y -qq drascula-music pocketsphinx-testdata >/dev/null 2>&1 || \
	     (apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq drascula-music pocketsphinx-testdata >/dev/null 2>&1)) || \
	    echo "drascula-music/pocketsphinx-testdata could not be installed: real-music tests skip"; \
	  else echo "drascula-music/pocketsphinx-testdata not installed: real-music tests skip"; fi; }

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

test: venv speech fonts sounds-media
	$(PY) -m pytest -m "not slow and not gpu" -q

test-all: venv speech fonts sounds-media
	$(PY) -m pytest -q

# Mutation fuzz tier: every mutant of tests/mutate.py through the decode stage (a fixed-seed slice runs in `make test`).
fuzz: venv
	$(PY) -m pytest -q tests/test_fuzz_decode.py tests/test_fuzz.py

bench: venv speech sounds-media
	$(PY) -m bench.run

clean:
	rm -rf $(BUILD) $(DEMO_OUT) .pytest_cache
