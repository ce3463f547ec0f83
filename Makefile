# Thin wrappers; every target installs what it needs (idempotent).
PY      ?= python3
VENV    := .venv
VPY     := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: setup models standins repository serve stop demo test bench lint clean

setup: $(STAMP)

$(STAMP): requirements.lock pyproject.toml
	test -x $(VPY) || $(PY) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip
	$(VPY) -m pip install -q -r requirements.lock
	$(VPY) -m pip install -q --no-deps insightface==0.7.3
	$(VPY) -m pip install -q --no-deps -e .
	touch $(STAMP)

models: setup            ## download the real models (size + SHA-256 checked); offline: says what is missing
	$(VPY) -m tools.download

standins: setup          ## generate the tiny and full stand-in models (not real face models)
	$(VPY) -m tools.standins --size tiny
	$(VPY) -m tools.standins --size full

repository: setup        ## write the CPU and GPU model repositories (config.pbtxt of every model)
	$(VPY) -m tools.repository --profile cpu
	$(VPY) -m tools.repository --profile gpu
	$(VPY) -m tools.repository --profile gpu-trt

serve: setup             ## Triton (HTTP 8000, gRPC 8001, metrics 8002) and the gateway (8080), loopback
	FACESWAP_STANDIN_SIZE=$${FACESWAP_STANDIN_SIZE:-full} $(VPY) -m tools.server start

stop:                    ## stop what `make serve` started (gateway and Triton)
	@test -x $(VPY) && $(VPY) -m tools.server stop || true

demo: setup              ## real photos through a real Triton server, end to end
	$(VPY) -m tools.demo

test: setup              ## the whole test suite (starts its own servers on free loopback ports)
	$(VPY) -m pytest -q $(PYTEST_ARGS)

bench: setup             ## face_swap images/s vs insightface, gateway added latency, 720p video frames/s
	$(VPY) -m tools.bench
	$(VPY) -m tools.bench_gateway
	$(VPY) -m tools.bench_video

lint: setup
	$(VPY) -m pip install -q ruff==0.8.4
	$(VENV)/bin/ruff check .

clean:
	rm -rf .run build out
