# Martlet — the two commands a new user needs:
#   make run    build and run the broker (martletd) with config/martlet.yaml (127.0.0.1:1883)
#               plus a TLS listener on 127.0.0.1:8883 with development certificates; sessions
#               and retained messages are kept in data/martlet.db
#   make test   install what the tests need, build, run every test and a bounded fuzz run
SHELL := /bin/bash
SWIFT ?= swift
CONFIG ?= config/martlet.yaml
# PORT=N adds a listener on 127.0.0.1:N to the config file's.
PORT ?=
TLS_PORT ?= 8883
FUZZ_SECONDS ?= 60

# Debian packages: libssl-dev for the OpenSSL shim; libsqlite3-dev for the session store;
# sqlite3 (the shell) for tests that inspect or damage a store; haproxy (a real PROXY protocol
# sender in front of martletd); mosquitto-clients, python3-paho-mqtt
# and mosquitto for the interop tests (third-party clients and broker); node-mqtt (MQTT.js) from
# Node and, bundled by esbuild with node-buffer, node-process and node-url, in headless chromium
# for the WebSocket tests. nats-server (JetStream) and libnats-dev for `cluster:` and its tests.
DEB_PACKAGES := libssl-dev libsqlite3-dev sqlite3 haproxy mosquitto mosquitto-clients python3-paho-mqtt iproute2 \
	node-mqtt node-buffer node-process node-url node-ws esbuild chromium nats-server libnats-dev

.PHONY: all deps build build-release run cluster test unit-tests fuzz benchmarks benchmark-check bench bench-floor clean

all: build

deps:
	@missing=""; for p in $(DEB_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = "0" ]; then \
	    echo "Installing Debian packages:$$missing"; \
	    export DEBIAN_FRONTEND=noninteractive; \
	    apt-get update -qq && apt-get install -y -qq --no-install-recommends $$missing >/dev/null || exit 1; \
	  else \
	    echo "Missing Debian packages:$$missing — run: sudo apt-get install$$missing" >&2; exit 1; \
	  fi; \
	fi
	@# The Debian mosquitto package starts a system broker on port 1883; the tests start their own.
	@if command -v systemctl >/dev/null 2>&1; then systemctl stop mosquitto haproxy nats-server >/dev/null 2>&1 || true; fi

build: deps
	$(SWIFT) build

build-release: deps
	$(SWIFT) build -c release --product martletd

# Development certificates for the TLS listener on 8883, made on first use (never committed).
certs/out/server.pem:
	bash certs/make-dev-certs.sh

run: build-release certs/out/server.pem
	@mkdir -p data
	$(SWIFT) run -c release --skip-build martletd --config $(CONFIG) $(if $(PORT),--port $(PORT)) \
	  --tls-port $(TLS_PORT) --cert certs/out/server.pem --key certs/out/server.key

# Three nats-servers (JetStream R3) and three martletd nodes on one machine (config/cluster/start.sh).
cluster: build-release
	bash config/cluster/start.sh

# *LoadTests (200 MB floods, a 5,000-connection burst, bench runs, takeover storms, 100,000
# retained messages, 50,000 churned connections) saturate both cores; they run on their own after
# the rest so timing tests (keepalive, timeouts) are not starved, and one at a time, since some
# measure what a saturated machine would hide (a slow subscriber that must fall behind).
# ClusterTests (three nats-servers and three martletd nodes per test) run on their own too.
unit-tests: deps
	$(SWIFT) build --build-tests
	$(SWIFT) test --skip-build --skip LoadTests --skip ClusterTests
	$(SWIFT) test --skip-build --filter ClusterTests
	$(SWIFT) test --skip-build --no-parallel --filter LoadTests

# One sanitizer only: with --sanitize=fuzzer and --sanitize=address together, the Swift
# driver kept one of the two at random and the codec was often built without coverage.
# lld is required too: gold drops the Swift coverage sections. The run fails if the
# fuzzer does not see the decoder's coverage (fewer than 10,000 counters).
fuzz: deps
	cd Fuzz && $(SWIFT) build --sanitize=fuzzer -Xswiftc -parse-as-library -Xswiftc -use-ld=lld
	@work=$$(mktemp -d) && cp Fuzz/corpus/* $$work/ && \
	  echo "Fuzzing the MQTT decoder for $(FUZZ_SECONDS) s" && \
	  Fuzz/.build/debug/FuzzDecoder -max_total_time=$(FUZZ_SECONDS) -timeout=10 -rss_limit_mb=2048 \
	    -artifact_prefix=$$work/ $$work > $$work/fuzz.log 2>&1; \
	  status=$$?; \
	  grep -E '^(INFO: Loaded 1 modules|#[0-9]+ +DONE|==[0-9]+==|SUMMARY|Done)' $$work/fuzz.log; \
	  if [ $$status -ne 0 ]; then tail -40 $$work/fuzz.log; echo "fuzzer failed (exit $$status); artifacts in $$work" >&2; exit 1; fi; \
	  counters=$$(sed -n 's/^INFO: Loaded 1 modules *(\([0-9]*\) inline 8-bit counters.*/\1/p' $$work/fuzz.log); \
	  if [ -z "$$counters" ] || [ "$$counters" -lt 10000 ]; then echo "fuzzer saw only $${counters:-no} coverage counters: the decoder is not instrumented" >&2; exit 1; fi; \
	  rm -rf $$work; echo "fuzz: no crash in $(FUZZ_SECONDS) s ($$counters coverage counters)"

test: unit-tests fuzz

benchmarks: certs/out/server.pem
	cd Benchmarks && $(SWIFT) package --disable-sandbox benchmark

# The routing and TLS microbenchmarks against their checked-in thresholds (Benchmarks/Thresholds).
benchmark-check: certs/out/server.pem
	cd Benchmarks && $(SWIFT) package --disable-sandbox benchmark thresholds check --target RoutingBenchmarks --target TLSBenchmarks

# martletd against mosquitto, side by side; writes BENCHMARKS.md (RUNS=3 DURATION=5 by default).
bench:
	bash Benchmarks/compare.sh
	bash Benchmarks/persistence.sh
	bash Benchmarks/bridge.sh
	bash Benchmarks/cluster.sh

# A bare SwiftNIO server (Benchmarks/NIOFloor) next to martletd and mosquitto: churn CPU and idle
# memory per connection that no broker on NIO channels can go below (ROUNDS=5 by default).
bench-floor:
	bash Benchmarks/floor.sh

clean:
	rm -rf .build Fuzz/.build Benchmarks/.build Benchmarks/NIOFloor/.build
