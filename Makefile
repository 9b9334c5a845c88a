# Two commands on a fresh machine:  make lab   |   make test
VENV   ?= .venv
PY     := $(VENV)/bin/python
PORT   ?= 8888
STAMP  := $(VENV)/.installed
# Jupyter refuses to run as root unless told; containers and CI often are root.
ROOT_FLAG := $(if $(filter 0,$(shell id -u)),--allow-root)
PYTEST_ARGS ?=
WHEELHOUSE ?= wheelhouse

.PHONY: lab test install bench results figures notebooks chat-app wheelhouse slides clean-venv

$(PY):
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

$(STAMP): pyproject.toml scripts/install_torch.sh | $(PY)
	bash scripts/install_torch.sh $(PY)
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

lab: install  ## start JupyterLab on notebooks/ (prints the URL; PORT= to change)
	$(VENV)/bin/jupyter lab --no-browser --ip=127.0.0.1 --port=$(PORT) \
	    --ServerApp.root_dir=notebooks $(ROOT_FLAG)

test: install  ## unit tests + notebooks (nbval, tiny profile)
	XRAYGPT_PROFILE=tiny $(PY) -m pytest --nbval-lax tests notebooks $(PYTEST_ARGS)

chat-app: install  ## the chat panel as a stand-alone web page (Voila, headless; prints the URL; PORT= to change)
	VENV=$(VENV) PORT=$(PORT) bash scripts/serve_chat.sh

wheelhouse: | $(PY)  ## every wheel the toolkit needs (CPU torch) for this platform and Python, in WHEELHOUSE= (default wheelhouse/)
	bash scripts/make_wheelhouse.sh $(PY) $(WHEELHOUSE)

slides: install  ## notebooks/slides_xraygpt_in_one_picture.ipynb as reveal.js slides in slides/ (works offline)
	VENV=$(VENV) bash scripts/make_slides.sh

notebooks: install  ## re-execute the notebooks in place from their .py sources (NB="05_attribution 07_evaluation" for some)
	bash scripts/execute_notebooks.sh $(VENV) $(NB)

figures: install  ## docs/images/*.png, the README's pictures, drawn by the toolkit from the reference run
	$(PY) scripts/make_figures.py

bench: install  ## benchmarks: prints one table, writes bench.json
	$(PY) benchmarks/run_all.py --out bench.json

results:  ## docs/results.md from bench.json, benchmarks/results/*.json and runs/*/metrics.json (standard library only)
	python3 scripts/make_results.py

clean-venv:
	rm -rf $(VENV)
