# edgecal: the two set-up commands are `make demo` and `make test` (see README.md).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
SAMPLE := samples/tinted_digits
OUT := out/demo
STAMP := $(VENV)/.edgecal-installed

.PHONY: venv demo test test-deps soak bench lint clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

# Tune the sample model's int8 calibration on the local machine (calibrate with KL, score the
# int8 model against fp32, rank the layers, fix harmful ones): out/demo gets the table, the int8
# model and report.html.  Then validate that int8 model on the held-out images with labels.
SAMPLE_PRE := --pixel RGB --mean 127.5,127.5,127.5 --norm 0.00784314,0.00784314,0.00784314 \
	--shape 48,48
demo: $(STAMP)
	$(VENV)/bin/edgecal tune $(SAMPLE)/model.param $(SAMPLE)/model.bin \
	    --images $(SAMPLE)/calib.txt $(SAMPLE_PRE) --method kl --max-drop 0.5 --out-dir $(OUT)
	$(VENV)/bin/edgecal validate $(SAMPLE)/model.param $(SAMPLE)/model.bin \
	    $(OUT)/int8.param $(OUT)/int8.bin --images $(SAMPLE)/test $(SAMPLE_PRE) \
	    --labels $(SAMPLE)/labels.csv --save-baseline $(OUT)/baseline.json
	@echo "report: $(OUT)/report.html"

# What the tests need beyond the venv: Debian's chromium for the report's browser test.
# Installed when missing and run as root (apt-get); otherwise that one test is skipped (it fails
# under CI=true).  The emulated boards are started separately (`make boards-up`, root).
test-deps:
	@if command -v chromium >/dev/null 2>&1; then chromium --version; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium \
	    >/dev/null && chromium --version; \
	else echo "test-deps: no chromium and not root: the report's browser test will be skipped"; fi

# The same hypothesis profile as CI (tests/conftest.py: derandomized, no saved examples).
test: $(STAMP) test-deps
	HYPOTHESIS_PROFILE=ci $(PY) -m pytest -q -p no:cacheprovider tests

# The board fault scenarios of tests/boards/test_board_faults.py (cut links, a board powered off,
# a killed agent, a full work directory) at many more random moments: SOAK_ROUNDS each (the
# seed is printed; EDGECAL_FAULT_SEED=N replays it).  Needs root and the boards in netns mode
# (BOARDS_NET=netns make boards-up BOARDS="emu1 emu2 emu3:bare emu4"; EDGECAL_BOARDS set).
# Not part of `make test`; ~3.5 min per round on a 2-core machine.
SOAK_ROUNDS ?= 8
soak: $(STAMP)
	EDGECAL_SOAK=1 EDGECAL_SOAK_ROUNDS=$(SOAK_ROUNDS) $(PY) -m pytest -q -p no:cacheprovider \
	    tests/boards/test_board_faults.py

# The benchmark figures, each with its target (bench/run.py says what each measures).  With
# NCNN2TABLE=/path/to/ncnn2table (the real tool, built outside the repository: see
# NCNN2TABLE_HOWTO in bench/run.py) it also times edgecal ncnn2table against it.
bench: $(STAMP)
	$(PY) bench/run.py

# ruff (lint, then the format check), then mypy ([tool.mypy] in pyproject.toml) over edgecal/ and edgecal_agent/, and the agent
# once more for Python 3.9, the oldest Python on a board.
lint: $(STAMP)
	$(VENV)/bin/ruff check edgecal edgecal_agent tests bench $(SAMPLE)/train.py $(SAMPLE)/eval_ncnn.py
	$(VENV)/bin/ruff format --check edgecal edgecal_agent tests bench $(SAMPLE)/train.py \
	    $(SAMPLE)/eval_ncnn.py
	$(VENV)/bin/mypy
	$(VENV)/bin/mypy --python-version 3.9 --no-warn-unused-configs edgecal_agent

clean:
	rm -rf $(VENV) out .pytest_cache .ruff_cache .mypy_cache build dist *.egg-info

include toolchains/boards.mk
