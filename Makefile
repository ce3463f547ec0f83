# Thin wrappers; every target installs what it needs (idempotent).
PY      ?= python3
VENV    := .venv
VPY     := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
PYTEST_ARGS ?=

# test-images is not part of test: building the images takes about 5 minutes on 2 cores and the stack
# needs podman (see docs/containers.md).
.PHONY: setup setup-web models standins repository serve stop web demo docs test test-py test-unit test-server test-system test-docs test-web bench perf lint clean

# The Worker's tools must not phone home (see ../shared/WORKER.md).
export WRANGLER_SEND_METRICS = false
export CLOUDFLARE_CF_FETCH_ENABLED = false
export WRANGLER_HIDE_BANNER = true
WEB_STAMP := worker/node_modules/.installed

setup: $(STAMP)
	@{ command -v redis-server >/dev/null && { command -v haproxy || test -x /usr/sbin/haproxy; } >/dev/null \
	   && command -v kubectl >/dev/null; } || { \
	  echo "installing Debian redis-server, haproxy and kubernetes-client (make cluster, tests of the cluster and deploy/)"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq redis-server haproxy \
	    $$(command -v kubectl >/dev/null || echo kubernetes-client) >/dev/null; }

$(STAMP): requirements.lock pyproject.toml
	test -x $(VPY) || $(PY) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip
	$(VPY) -m pip install -q -r requirements.lock
	$(VPY) -m pip install -q --no-deps insightface==0.7.3
	$(VPY) -m pip install -q --no-deps runpod==1.12.0   # its metadata's pins clash with the lock (pyproject: serverless)
	$(VPY) -m pip install -q --no-deps -e .
	touch $(STAMP)

# PyTorch, CPU build, for the GPU profile's tensor stages run on the CPU in the tests
# (pipeline/torch_ops.py); not in the lock, so the server images stay without it. An exact
# version: a range would let pip take a CUDA build of several GB.
TORCH_STAMP := $(VENV)/.torch-2.13.0
$(TORCH_STAMP): $(STAMP)
	$(VPY) -m pip install -q torch==2.13.0
	touch $(TORCH_STAMP)

setup-web: $(WEB_STAMP)   ## Node packages of the Worker (npm ci) and Debian Chromium for the browser test

$(WEB_STAMP): worker/package-lock.json worker/package.json
	cd worker && npm ci --no-audit --no-fund
	@command -v chromium >/dev/null || { \
	  echo "installing Debian chromium (browser end-to-end test)"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null; }
	touch $(WEB_STAMP)

models: setup            ## download the real models (size + SHA-256 checked); offline: says what is missing
	$(VPY) -m repository models

standins: setup          ## generate the tiny and full stand-in models (not real face models)
	$(VPY) -m repository standins --size tiny
	$(VPY) -m repository standins --size full

repository: setup        ## write the CPU and GPU model repositories (config.pbtxt of every model)
	$(VPY) -m repository build --profile cpu
	$(VPY) -m repository build --profile gpu
	$(VPY) -m repository build --profile gpu-trt

# FACESWAP_PROFILE=torch make serve: PyTorch first (the pinned version; on a GPU machine PyPI's build is CUDA's)
serve: setup $(if $(filter torch,$(FACESWAP_PROFILE)),$(TORCH_STAMP))  ## Triton (HTTP 8000, gRPC 8001, metrics 8002) and the gateway (8080), loopback
	FACESWAP_STANDIN_SIZE=$${FACESWAP_STANDIN_SIZE:-full} $(VPY) -m launch.server start

stop:                    ## stop what `make serve` / `make web` started
	@test -x $(VPY) && $(VPY) -m launch.server stop || true
	@test -f .run/wrangler.pid && { kill -- -$$(cat .run/wrangler.pid) 2>/dev/null; rm -f .run/wrangler.pid; echo "worker stopped"; } || true

web: setup setup-web     ## Triton + gateway (signed) + the Worker with local R2 on http://127.0.0.1:8787
	@mkdir -p .run && test -s .run/web_secret || $(VPY) -c "import secrets; print(secrets.token_hex(32))" > .run/web_secret
	FACESWAP_STANDIN_SIZE=$${FACESWAP_STANDIN_SIZE:-full} FACESWAP_GATEWAY_HMAC_SECRET=$$(cat .run/web_secret) \
	  FACESWAP_GATEWAY_MEDIA_URL_PREFIXES=http://127.0.0.1:8787/api/media/ \
	  $(VPY) -m launch.server start
	cd worker && setsid npx wrangler dev --local --ip 127.0.0.1 --port 8787 --persist-to ../.run/wrangler \
	  --var GATEWAY_URL:http://127.0.0.1:8080 --var GATEWAY_SECRET:$$(cat ../.run/web_secret) \
	  --show-interactive-dev-session=false > ../.run/wrangler.log 2>&1 & echo $$! > .run/wrangler.pid
	@for i in $$(seq 60); do curl -fs http://127.0.0.1:8787/ >/dev/null && break; sleep 0.5; done
	@echo "web page: http://127.0.0.1:8787 (R2 kept in .run/wrangler; log .run/wrangler.log); stop with make stop"

demo: setup              ## real models where they can be had, real photos, a real Triton server, end to end
	$(VPY) -m repository models --retries 2 --timeout 20
	$(VPY) -m launch.demo

docs: setup              ## the reference in docs/ as a site (MkDocs, Material theme) in build/site
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict -d build/site

test: test-py test-docs test-web   ## the whole test suite (starts its own servers on free loopback ports)

test-py: setup $(TORCH_STAMP)  ## ruff, then every Python tier; prints the 15 slowest tests
	$(VENV)/bin/ruff check .
	$(VPY) -m pytest -q --durations=15 $(PYTEST_ARGS)

test-unit: setup $(TORCH_STAMP)  ## tests/unit: no server process
	$(VPY) -m pytest -q --durations=15 tests/unit $(PYTEST_ARGS)

test-server: setup      ## tests/server: a real tritonserver and the gateway
	$(VPY) -m pytest -q --durations=15 tests/server $(PYTEST_ARGS)

test-system: setup      ## tests/system: Redis, SeaweedFS, HAProxy, supervisors, the cluster
	$(VPY) -m pytest -q --durations=15 tests/system $(PYTEST_ARGS)

test-docs: docs          ## the reference site builds with --strict: a broken link or a page missing from the nav fails

test-web: setup setup-web ## Worker: typecheck, vitest on the Workers runtime, browser end to end
	cd worker && npm test

bench: setup             ## face_swap images/s vs insightface, int8/bf16/fp32 speed and parity, gateway added latency, video, live, cluster
	$(VPY) -m bench.vs_insightface
	$(VPY) -m bench.lean
	$(VPY) -m repository quantize --models full --json out/quantize_full.json
	$(VPY) -m bench.gateway
	$(VPY) -m bench.video
	$(VPY) -m bench.cluster
	$(VPY) -m bench.live
	$(VPY) -m bench.marking
	$(VPY) -m bench.quality
	$(VPY) -m bench.overload
	$(VPY) -m bench.content

perf: setup              ## perf_analyzer (tritonclient 2.41.0 in .venv-perf) against face_swap on `make serve`
	@ldconfig -p | grep -q libb64.so.0d || { SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq libb64-0d >/dev/null; }
	$(VPY) -m bench.perf_analyzer $(PERF_ARGS)

.PHONY: images test-images

images:                  ## gateway/worker and CPU Triton (+ RunPod) images, podman or docker (local debootstrap base, Redis and SeaweedFS images when no registry answers)
	deploy/images.sh

test-images: setup images ## the compose stack from the built images under podman-compose (tests/system/test_compose.py; not in `make test`)
	$(VPY) -m pytest -q --durations=15 -m images tests/system/test_compose.py $(PYTEST_ARGS)

.PHONY: cluster cluster-stop

cluster:                 ## Redis, S3 (SeaweedFS), 2 Tritons, 2 gateways behind HAProxy, 2 job workers; loopback
	@$(MAKE) --no-print-directory setup >&2  # stdout: only the component lines of launch.cluster
	@$(VPY) -m launch.cluster start $(CLUSTER_ARGS)

cluster-stop:            ## stop what `make cluster` started (by pid; safe twice)
	@test -x $(VPY) && $(VPY) -m launch.cluster stop || true

lint: setup
	$(VENV)/bin/ruff check .

clean:
	rm -rf .run build out
