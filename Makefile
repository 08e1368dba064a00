# edgecal: the two set-up commands are `make demo` and `make test` (see README.md).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
SAMPLE := samples/tinted_digits
OUT := out/demo
STAMP := $(VENV)/.edgecal-installed

.PHONY: venv demo test bench lint clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

# Calibrate the sample model on the local machine (KL), convert it to int8, then run fp32
# and int8 through the local agent on the held-out images: accuracy and agreement.
demo: $(STAMP)
	mkdir -p $(OUT)
	$(VENV)/bin/edgecal calibrate $(SAMPLE)/model.param $(SAMPLE)/model.bin \
	    --images $(SAMPLE)/calib.txt --pixel RGB --mean 127.5,127.5,127.5 \
	    --norm 0.00784314,0.00784314,0.00784314 --shape 48,48 --method kl \
	    --out $(OUT)/model.table --histograms-out $(OUT)/histograms.npz
	$(VENV)/bin/edgecal quantize $(SAMPLE)/model.param $(SAMPLE)/model.bin \
	    $(OUT)/model-int8.param $(OUT)/model-int8.bin --table $(OUT)/model.table
	$(VENV)/bin/edgecal validate $(SAMPLE)/model.param $(SAMPLE)/model.bin \
	    $(OUT)/model-int8.param $(OUT)/model-int8.bin \
	    --images $(SAMPLE)/test --pixel RGB --mean 127.5,127.5,127.5 \
	    --norm 0.00784314,0.00784314,0.00784314 --shape 48,48 --labels $(SAMPLE)/labels.csv

test: $(STAMP)
	$(PY) -m pytest -q -p no:cacheprovider tests

bench: $(STAMP)
	$(PY) bench/run.py

lint: $(STAMP)
	$(VENV)/bin/ruff check edgecal device_agent tests bench $(SAMPLE)/train.py $(SAMPLE)/eval_ncnn.py

clean:
	rm -rf $(VENV) out .pytest_cache .ruff_cache build dist *.egg-info

include toolchains/boards.mk
