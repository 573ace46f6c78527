# Common entry points. Each target installs the venv first (reused while the lock is unchanged).
PY := .venv/bin/python

.PHONY: install services run test test-fast bench generate demo
install:
	bash scripts/bootstrap.sh

services:  ## system packages the tests need (redis-server)
	bash scripts/install_services.sh

run: install  ## generate the default shop and run the whole TFX pipeline
	$(PY) -m pipeline.local_runner $(ARGS)

test: install services  ## the whole test suite, end-to-end pipeline runs included
	$(PY) -m pytest -q $(ARGS)

test-fast: install services  ## everything but the end-to-end pipeline runs
	$(PY) -m pytest -q -m "not e2e" $(ARGS)

generate: install
	$(PY) -m shoprec.data.generate $(ARGS)

bench: install
	$(PY) -m bench.pipeline $(ARGS)

demo: install  ## the whole stack: pipeline if no model is pushed, model server, service, Streamlit app; Ctrl-C stops all
	$(PY) -m ui.demo $(ARGS)
