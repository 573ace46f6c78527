# Common entry points. Each target installs the venv first (reused while the lock is unchanged).
PY := .venv/bin/python

.PHONY: install services run test test-fast bench generate demo retrain
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

# One turn of the production loop (docs/production_loop.md): the events the service logged since
# the last span become the next span, then the pipeline trains on the window of the latest spans,
# warm-started from the last blessed model, and pushes where the model server watches.
LOG ?= runs/service/events.sqlite
SPANS ?= runs/spans
BASE ?= runs/local/data
OUT ?= runs/local
retrain: install  ## export the logged events as the next span, then a warm-started pipeline turn on the span window
	$(PY) -m service.event_log export_span --log $(LOG) --spans_dir $(SPANS) --base_data_dir $(BASE)
	$(PY) -m pipeline.local_runner --output_dir $(OUT) --spans_dir $(SPANS) --warm_start true $(ARGS)
