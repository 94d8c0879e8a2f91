# Verity: one non-recursive Makefile.
#   make            build release binaries (verityd, verity, examples) into build/
#   make tests      also build the test binaries
#   make test       install deps, build, run every test, then the unit suites
#                   again under ASan+UBSan, then the fuzz targets (the
#                   frame decoder for TEST_FUZZ_SECONDS (30), the others 5 s)
#   make run        install deps, build, start a single-node broker
#   make bench      storage + broker benchmarks, written into docs/PERFORMANCE.md
#                   (WITH_PEERS=1 runs Redis Streams / NATS JetStream in the same sitting)
#   make fuzz       run the libFuzzer targets (FUZZ_SECONDS each)
#   make stress-groups  the groups e2e suite STRESS_RUNS (30) times under a CPU load
#   make test-kafka, test-kafka-full, bench-kafka  the Kafka listener (docs/KAFKA.md)
#   make bench-abuse  pre-authentication abuse figures (docs/PERFORMANCE.md)
#   make fmt        clang-format every C file
#   make install    PREFIX (/usr/local), DESTDIR, SYSCONFDIR (/etc): binaries,
#                   systemd unit, example config, docs
# Variables: BUILD (output dir, default build), MODE (release|debug|asan),
# WERROR=1 (CI sets it through .ci/run).

BUILD ?= build
MODE ?= release
CC ?= gcc
FUZZ_SECONDS ?= 60
# Seconds the fuzz target runs inside `make test` (0 skips it).
# make test: the frame decoder's fuzz target for TEST_FUZZ_SECONDS, every
# other target for 5 s (each of these variables overrides it); `make fuzz`
# runs them for their longer defaults (tests/fuzz/run.sh).
TEST_FUZZ_SECONDS ?= 30
TEST_FUZZ_SHORT := SHARE_FUZZ_SECONDS VSR_FUZZ_SECONDS VSR_WIRE_FUZZ_SECONDS \
                   XFER_WIRE_FUZZ_SECONDS META_SNAP_FUZZ_SECONDS VAPPLIED_FUZZ_SECONDS \
                   KAFKA_FUZZ_SECONDS PROOF_FUZZ_SECONDS AUTH_FUZZ_SECONDS

DEB_PKGS := build-essential pkg-config libssl-dev libevent-dev \
            protobuf-c-compiler libprotobuf-c-dev libjansson-dev \
            libcunit1-dev libsqlite3-dev clang libclang-rt-14-dev
# Kafka listener suite (issue 15): the real clients from Debian's packages.
DEB_PKGS += kcat python3-confluent-kafka python3-kafka librdkafka-dev

PKG_LIBS := libevent libevent_pthreads libcrypto libssl libprotobuf-c jansson
# ---- TLS (issue 14): libevent's OpenSSL bufferevents (in libevent-dev) ------
PKG_LIBS += libevent_openssl
# the openssl command: deploy/gen-certs.sh and tests/ops/test_ops_tls.sh
DEB_PKGS += openssl
WARN := -Wall -Wextra -Wshadow -Wstrict-prototypes -Wno-unused-parameter
ifeq ($(WERROR),1)
WARN += -Werror
endif
CPPFLAGS += -D_GNU_SOURCE -Iinclude -I. -I$(BUILD)/gen
CFLAGS_release := -O2 -g
CFLAGS_debug := -O0 -g3
CFLAGS_asan := -O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all
CFLAGS += -std=c17 $(WARN) $(CFLAGS_$(MODE)) -MMD -MP -pthread
PKG_CFLAGS = $(shell pkg-config --cflags $(PKG_LIBS) 2>/dev/null)
LDLIBS += $(shell pkg-config --libs $(PKG_LIBS) 2>/dev/null) -lcunit -lsqlite3 -lpthread -lm
SAN_FLAGS := -fsanitize=address,undefined
LDFLAGS += $(if $(filter asan,$(MODE)),$(SAN_FLAGS))

# ---- sources ---------------------------------------------------------------
PROTO_SRC   := proto/verity.proto
PROTO_GEN_C := $(if $(wildcard $(PROTO_SRC)),$(BUILD)/gen/proto/verity.pb-c.c)
STORAGE_SRC := $(wildcard storage/*.c)
PROTOLIB_SRC:= $(wildcard proto/*.c)
CLIENT_SRC  := $(wildcard client/*.c)
GROUP_SRC   := $(wildcard broker/group/*.c)
VSR_SRC     := $(wildcard broker/vsr/*.c)
KAFKA_SRC   := $(wildcard broker/kafka/*.c)
BROKER_SRC  := $(filter-out broker/main.c,$(wildcard broker/*.c)) $(GROUP_SRC) $(VSR_SRC) $(KAFKA_SRC)
TOOLS_SRC   := $(wildcard tools/*.c)
EXAMPLE_SRC := $(wildcard tools/examples/*.c)

obj = $(patsubst %.c,$(BUILD)/obj/%.o,$(1))

LIB_OBJ    := $(call obj,$(STORAGE_SRC) $(PROTOLIB_SRC) $(CLIENT_SRC)) \
              $(if $(PROTO_GEN_C),$(BUILD)/obj/gen/verity.pb-c.o)
LIBVERITY  := $(BUILD)/lib/libverity.a
BROKER_OBJ := $(call obj,$(BROKER_SRC))
BROKERLIB  := $(BUILD)/lib/libverityd.a

BINS := $(BUILD)/bin/verity
ifneq ($(wildcard broker/main.c),)
BINS += $(BUILD)/bin/verityd
endif
# Downstream programs (consumer/): listed here, before any rule uses BINS.
ifneq ($(wildcard consumer/share/gateway.c),)
BINS += $(BUILD)/bin/verity-gateway
endif
EXAMPLES := $(patsubst tools/examples/%.c,$(BUILD)/examples/%,$(EXAMPLE_SRC))

UNIT_TESTS  := $(patsubst tests/unit/%.c,$(BUILD)/tests/%,$(wildcard tests/unit/test_*.c))
INTEG_TESTS := $(patsubst tests/integ/%.c,$(BUILD)/tests/%,$(wildcard tests/integ/test_*.c))
TEST_SUPPORT:= $(call obj,$(wildcard tests/support/*.c))

.PHONY: all tests deps run test test-unit test-integ check-asan bench fuzz fmt clean stress-groups
# Keep every object (make would otherwise delete test objects as
# intermediates and rebuild them on the next `make run` or `make test`).
.SECONDARY:
# `make` builds the programs (verityd, verity, examples); `make tests` the
# test binaries too (make test builds them itself).
all: $(BINS) $(EXAMPLES)
tests: all $(UNIT_TESTS) $(INTEG_TESTS)

# ---- dependencies ----------------------------------------------------------
deps:
	@missing=""; for p in $(DEB_PKGS); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'ok installed' || missing="$$missing $$p"; \
	done; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ]; then \
	  echo "deps: installing$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	else \
	  echo "deps: missing packages; run as root:"; \
	  echo "  apt-get update && apt-get install -y$$missing"; exit 1; \
	fi

# ---- generated protocol code ------------------------------------------------
# One protoc-c run makes both files: a grouped target (GNU make >= 4.3), so
# `make -j` never runs it twice and rewrites the header under objects that
# were already compiled (which made the next `make` rebuild them).
$(BUILD)/gen/proto/verity.pb-c.c $(BUILD)/gen/proto/verity.pb-c.h &: $(PROTO_SRC)
	@mkdir -p $(BUILD)/gen
	protoc-c --c_out=$(BUILD)/gen $(PROTO_SRC)

$(BUILD)/obj/gen/verity.pb-c.o: $(BUILD)/gen/proto/verity.pb-c.c
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(PKG_CFLAGS) $(filter-out -Wshadow,$(CFLAGS)) -w -c $< -o $@

# every object may include the generated header
GEN_HDR := $(if $(PROTO_GEN_C),$(BUILD)/gen/proto/verity.pb-c.h)

$(BUILD)/obj/%.o: %.c | $(GEN_HDR)
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(PKG_CFLAGS) $(CFLAGS) -c $< -o $@

$(LIBVERITY): $(LIB_OBJ)
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $^

$(BROKERLIB): $(BROKER_OBJ)
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $^

$(BUILD)/bin/verity: $(call obj,$(TOOLS_SRC)) $(LIBVERITY)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(LDLIBS)

# issue 14: `verity auth` edits the broker's security store with its code.
$(BUILD)/bin/verity: $(BUILD)/obj/broker/auth_store.o

$(BUILD)/bin/verityd: $(BUILD)/obj/broker/main.o $(BROKERLIB) $(LIBVERITY)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/examples/%: $(BUILD)/obj/tools/examples/%.o $(LIBVERITY)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/tests/%: $(BUILD)/obj/tests/unit/%.o $(TEST_SUPPORT) $(if $(BROKER_OBJ),$(BROKERLIB)) $(LIBVERITY)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/tests/%: $(BUILD)/obj/tests/integ/%.o $(TEST_SUPPORT) $(if $(BROKER_OBJ),$(BROKERLIB)) $(LIBVERITY)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(LDLIBS)

# ---- sharing gateway (consumer/share, docs/SHARING.md) ---------------------
# libvshare: the gateway's core, linked into verity-gateway, the verity CLI
# (verity share ...) and the share tests. Built on libverity only.
SHARE_SRC := $(filter-out consumer/share/gateway.c,$(wildcard consumer/share/*.c))
SHARELIB  := $(BUILD)/lib/libvshare.a
SHARE_LIBS := $(SHARELIB) $(LIBVERITY) -levent_openssl

$(SHARELIB): $(call obj,$(SHARE_SRC))
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $^

$(BUILD)/bin/verity-gateway: $(BUILD)/obj/consumer/share/gateway.o $(SHARELIB) $(LIBVERITY)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $^ -levent_openssl $(LDLIBS)

$(BUILD)/bin/verity: $(SHARELIB)
$(BUILD)/bin/verity: LDLIBS := $(SHARE_LIBS) $(LDLIBS)
SHARE_TESTS := $(BUILD)/tests/test_share_unit $(BUILD)/tests/test_share_gateway
$(SHARE_TESTS): $(SHARELIB)
$(SHARE_TESTS): LDLIBS := $(SHARE_LIBS) $(LDLIBS)

# ---- tests -----------------------------------------------------------------
# Each test binary is a CUnit program that exits non-zero on any failure.
# Tests find the binaries through VERITY_BIN_DIR.
# Each stage prints its wall time, so the 20-minute budget of `make test`
# (CI) can be watched stage by stage.
stage = t0=$$(date +%s) && $(MAKE) --no-print-directory $(1) && \
	echo "[make test: $(1) took $$(( $$(date +%s) - t0 )) s]"

test: deps
	@$(MAKE) --no-print-directory tests
	@$(call stage,test-unit test-integ)
	@$(call stage,test-ops)
	@$(call stage,test-sim)
	@$(call stage,test-kafka)
	@$(call stage,test-cluster-quick)
	@$(call stage,check-asan)
	@if [ "$(TEST_FUZZ_SECONDS)" != 0 ]; then t0=$$(date +%s) && \
	  $(foreach v,$(TEST_FUZZ_SHORT),$(v)=$${$(v):-5}) \
	  FUZZ_DIR=$(abspath $(BUILD))/fuzz bash tests/fuzz/run.sh $(TEST_FUZZ_SECONDS) && \
	  echo "[make test: fuzz took $$(( $$(date +%s) - t0 )) s]"; fi
	@echo "make test: all suites passed"

test-unit: $(UNIT_TESTS)
	@set -e; for t in $(UNIT_TESTS); do echo "== $$t"; VERITY_BIN_DIR=$(abspath $(BUILD)/bin) $$t; done

test-integ: $(BINS) $(INTEG_TESTS)
	@set -e; for t in $(INTEG_TESTS); do echo "== $$t"; VERITY_BIN_DIR=$(abspath $(BUILD)/bin) $$t; done

# The unit suites again under AddressSanitizer + UndefinedBehaviorSanitizer.
# VERITY_TEST_QUICK shortens the heaviest loops (the crash test still kills
# its child at least 50 times).
check-asan:
	@$(MAKE) --no-print-directory BUILD=$(BUILD)/asan MODE=asan WERROR=$(WERROR) asan-unit

asan-unit: $(UNIT_TESTS) $(BINS)
	@set -e; for t in $(UNIT_TESTS); do echo "== [asan] $$t"; \
	  VERITY_TEST_QUICK=1 VERITY_BIN_DIR=$(abspath $(BUILD)/bin) \
	  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 $$t; done

# ---- operator tests (issue 8): shell tests against the real binaries -------
# tests/ops/test_ops_*.sh, each printing "NAME: N passed, N failed".
OPS_TESTS := $(sort $(wildcard tests/ops/test_ops_*.sh))
# python3 drives the attacks and reads JSON; curl checks the admin port;
# systemd-analyze verifies the unit.
DEB_PKGS += python3 curl systemd
.PHONY: test-ops
test-ops: $(BINS)
	@set -e; for t in $(OPS_TESTS); do echo "== $$t"; \
	  VERITY_BIN_DIR=$(abspath $(BUILD)/bin) VERITY_SRC_DIR=$(CURDIR) bash $$t; done

# ---- install (issue 8): PREFIX, DESTDIR, SYSCONFDIR -------------------------
#   make install [PREFIX=/usr/local] [DESTDIR=/tmp/stage] [SYSCONFDIR=/etc]
# Installs verityd and verity, the systemd unit (paths filled in), the
# example configuration (never over an existing one) and the docs.
PREFIX ?= /usr/local
SYSCONFDIR ?= /etc
BINDIR = $(PREFIX)/bin
DOCDIR = $(PREFIX)/share/doc/verity
UNITDIR ?= $(PREFIX)/lib/systemd/system
.PHONY: install
install: $(BINS)
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(DOCDIR) $(DESTDIR)$(UNITDIR) $(DESTDIR)$(SYSCONFDIR)/verity
	install -m 0755 $(BINS) $(DESTDIR)$(BINDIR)/
	sed -e 's|@BINDIR@|$(BINDIR)|g' -e 's|@SYSCONFDIR@|$(SYSCONFDIR)|g' -e 's|@DOCDIR@|$(DOCDIR)|g' \
	  deploy/verityd.service.in > $(DESTDIR)$(UNITDIR)/verityd.service
	chmod 0644 $(DESTDIR)$(UNITDIR)/verityd.service
	test -e $(DESTDIR)$(SYSCONFDIR)/verity/verityd.json || \
	  install -m 0644 deploy/verityd.example.json $(DESTDIR)$(SYSCONFDIR)/verity/verityd.json
	install -m 0644 README.md docs/*.md $(DESTDIR)$(DOCDIR)/
# ---- replication simulator (tests/sim, issue 9) ------------------------------
# make sim SEEDS=N [SEED_START=S]   run N seeds of the VSR simulator
# make test-sim                     TEST_SIM_SEEDS seeds (200), the regression
#                                   seeds (vsr_sim --regressions), the scenarios
#                                   (vsr_sim --scenarios: stickiness, failover), then each planted
#                                   bug (a-e) must be caught by a safety checker
#                                   within the same seeds
SEEDS ?= 1000
SEED_START ?= 1
TEST_SIM_SEEDS ?= 200
SIM_BIN := $(BUILD)/tests/vsr_sim
.PHONY: sim test-sim asan-sim
tests: $(SIM_BIN)
$(SIM_BIN): $(BUILD)/obj/tests/sim/vsr_sim.o $(BROKERLIB) $(LIBVERITY)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(LDLIBS)

sim: $(SIM_BIN)
	$(SIM_BIN) --seeds $(SEEDS) --start $(SEED_START)

test-sim: $(SIM_BIN)
	@echo "== $(SIM_BIN) --seeds $(TEST_SIM_SEEDS)"
	@$(SIM_BIN) --seeds $(TEST_SIM_SEEDS)
	@echo "== $(SIM_BIN) --regressions"
	@$(SIM_BIN) --regressions
	@echo "== $(SIM_BIN) --regressions --no-wipe (the paths the seeds were fixed on)"
	@$(SIM_BIN) --regressions --no-wipe
	@echo "== $(SIM_BIN) --scenarios --seeds 20 (leader stickiness, failover)"
	@$(SIM_BIN) --scenarios --seeds 20
	@set -e; for p in a b c d e; do \
	  $(SIM_BIN) --plant $$p --seeds $(TEST_SIM_SEEDS) --expect-fail --safety-only 2>/dev/null | tail -1; done
	@$(MAKE) --no-print-directory BUILD=$(BUILD)/asan MODE=asan WERROR=$(WERROR) asan-sim

# The simulator under ASan+UBSan for a few seeds (the core's memory safety).
asan-sim: $(SIM_BIN)
	@echo "== [asan] $(SIM_BIN) --seeds 30"
	@ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	  $(SIM_BIN) --seeds 30 --start 7000

run: deps
	@$(MAKE) --no-print-directory all
	@bash tools/run.sh $(BUILD)

bench: deps
	@$(MAKE) --no-print-directory all
	@bash tools/perf_report.sh $(BUILD)

fuzz: deps
	@bash tests/fuzz/run.sh $(FUZZ_SECONDS)

# The groups end-to-end suite STRESS_RUNS times in a row with every core
# kept busy by a busy loop (issue 7: no flaky rebalance under load).
STRESS_RUNS ?= 30
stress-groups: deps
	@$(MAKE) --no-print-directory all tests
	@bash tests/stress_groups_e2e.sh $(BUILD) $(STRESS_RUNS)

# ---- Kafka listener (issue 15) ------------------------------------------------
# test-kafka: kcat, confluent-kafka and kafka-python against a real verityd,
# TLS, SASL and resource attacks on the Kafka port (~60-90 s; part of make test). test-kafka-full: the same with a 1,000,000-message
# idempotent producer and three kill -9s (several minutes).
.PHONY: test-kafka test-kafka-full
test-kafka: $(BINS)
	@echo "== tests/kafka/run.sh quick"
	@bash tests/kafka/run.sh $(BUILD) quick
	@echo "== tests/kafka/tls.sh"
	@bash tests/kafka/tls.sh $(BUILD)
	@echo "== tests/kafka/sasl.sh"
	@bash tests/kafka/sasl.sh $(BUILD)
	@echo "== tests/kafka/attack.sh"
	@bash tests/kafka/attack.sh $(BUILD)
	@echo "== tests/kafka/mtls.sh"
	@bash tests/kafka/mtls.sh $(BUILD)

test-kafka-full: deps
	@$(MAKE) --no-print-directory $(BINS)
	@bash tests/kafka/run.sh $(BUILD) full

# bench-kafka: W1/W3 with librdkafka against the Kafka port next to the
# native protocol, same broker and sitting (docs/PERFORMANCE.md).
.PHONY: bench-kafka
$(BUILD)/bin/kafka_bench: tools/kafka/kafka_bench.c
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) $(LDFLAGS) -o $@ $< -lrdkafka

bench-kafka: deps
	@$(MAKE) --no-print-directory $(BINS) $(BUILD)/bin/kafka_bench
	@bash tools/kafka/bench.sh $(BUILD)

fmt:
	clang-format -i $$(git ls-files '*.c' '*.h')

clean:
	rm -rf build build-*

-include $(shell find $(BUILD)/obj -name '*.d' 2>/dev/null)

# ---- start-time benchmark (issue 7, bounded state) -------------------------
# make bench-start: broker start time and memory with a large log of small
# batches and a long group log, whole-log replay vs snapshot + tail
# (tests/perf/start_bench.c; figures in docs/PERFORMANCE.md). Not in
# `make test`: it writes BENCH_START_BYTES of log.
BENCH_START_BYTES ?= 1073741824
BENCH_START_GROUP_RECORDS ?= 1000000
BENCH_START_DIR ?= /tmp/verity-start-bench

$(BUILD)/perf/start_bench: $(BUILD)/obj/tests/perf/start_bench.o $(TEST_SUPPORT) $(BROKERLIB) $(LIBVERITY)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(LDLIBS)

.PHONY: bench-start
bench-start: $(BUILD)/perf/start_bench $(BINS)
	rm -rf $(BENCH_START_DIR) && mkdir -p $(BENCH_START_DIR)
	VERITY_BIN_DIR=$(abspath $(BUILD)/bin) $(BUILD)/perf/start_bench $(BENCH_START_DIR)/data \
	  $(BENCH_START_BYTES) $(BENCH_START_GROUP_RECORDS)
	rm -rf $(BENCH_START_DIR)

# ---- proofs (issue 11): the independent Go verifier -------------------------
# tests/go/proofcheck is built offline in GOPATH mode against Debian's
# golang-golang-x-mod-dev (sumdb/note, sumdb/tlog); test_proofs (part of
# test-integ, ~45 s including a 1,000,003-batch log) runs it.
DEB_PKGS += golang-go golang-golang-x-mod-dev
PROOFCHECK := $(BUILD)/go/proofcheck
GO_ENV := GO111MODULE=off GOPATH=/usr/share/gocode GOFLAGS= GOCACHE=$(abspath $(BUILD))/go/cache

$(PROOFCHECK): tests/go/proofcheck/main.go
	@mkdir -p $(dir $@)
	$(GO_ENV) go build -o $@ ./tests/go/proofcheck

test-integ: $(PROOFCHECK)

# The Merkle tree's cost (docs/PERFORMANCE.md): append tree on vs off, then
# proof time in a 5 GiB log (~5.5 GiB of /tmp while it runs, a few minutes).
# Not part of make test.
.PHONY: bench-proofs
bench-proofs: $(BINS)
	$(BUILD)/bin/verity proof bench --records 3000000 --rounds 5 --big-gib 5 --proofs 10000

# ---- projection worker (consumer/project, issue 12) --------------------------
# verity-project: libverity + jansson + SQLite + libpq. soak-project runs the
# full-size projection tests (1,000,000 events, 20 kill -9s) outside make test.
DEB_PKGS += libpq-dev postgresql
PROJECT_SRC := $(wildcard consumer/project/*.c)
PROJECT_CFLAGS := -I$(shell pg_config --includedir 2>/dev/null || echo /usr/include/postgresql)
ifneq ($(PROJECT_SRC),)
BINS += $(BUILD)/bin/verity-project
all test-integ asan-unit: $(BUILD)/bin/verity-project
endif
$(call obj,$(PROJECT_SRC)): CPPFLAGS += $(PROJECT_CFLAGS)
$(BUILD)/bin/verity-project: $(call obj,$(PROJECT_SRC)) $(LIBVERITY)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(LDLIBS) -lpq
PROJECT_TESTS := $(patsubst tests/integ/%.c,%,$(wildcard tests/integ/test_project*.c))
$(addprefix $(BUILD)/tests/,$(PROJECT_TESTS)): LDLIBS += -lpq
$(addprefix $(BUILD)/obj/tests/integ/,$(addsuffix .o,$(PROJECT_TESTS))): CPPFLAGS += $(PROJECT_CFLAGS)
.PHONY: soak-project fuzz-project
# libFuzzer over the config and event decoders (FUZZ_SECONDS).
fuzz-project:
	@bash tests/fuzz/run_project.sh $(FUZZ_SECONDS)
soak-project: all tests
	VERITY_PROJECT_SOAK=1 VERITY_BIN_DIR=$(abspath $(BUILD)/bin) $(BUILD)/tests/test_project
	VERITY_PROJECT_SOAK=1 VERITY_BIN_DIR=$(abspath $(BUILD)/bin) $(BUILD)/tests/test_project_pg

# ---- replicated cluster: client and fault harness (issue 10) -----------------
# make test-cluster   the harness's own tests (relay cut/heal over real TCP,
#                     the history checker on histories it must reject), the
#                     cluster CLI against 3 real brokers, the recorder and
#                     checks on one real broker kill -9d every 3 s, and a 60 s leader
#                     kill loop (3 brokers, acks=quorum) with history check,
#                     log verify and byte comparison of the replicas; network
#                     partitions through relays (primary isolated, 2/3 split
#                     on 5 brokers, one-way) and power loss of two of three
#                     brokers (verityd_powerloss), with its lying-disk
#                     negative control; state transfer of a backup 3,000+
#                     ops behind and repair of a replica with bit flips in
#                     a closed segment or a truncated active segment
#                     (tests/cluster/repair_e2e.py, about 40 s each); a
#                     backup restarted ~1,500 ops behind catching up by
#                     repair within 20 s under load (repair_e2e.py catchup,
#                     ~40 s); five primary failovers each within 2 s
#                     (failover_time.py --bound 2, ~70 s); a
#                     broker whose data directory is deleted and restarted
#                     with --rejoin while production continues
#                     (tests/cluster/rejoin_e2e.py, about 60-75 s, and
#                     again 2,000+ ops behind: by state transfer, ~100 s,
#                     and killed again during its rejoin, ~55 s); dead
#                     letters of a group through a kill loop of the
#                     coordinator and the dead-letter partition's primary
#                     (tests/cluster/dlq_e2e.py, ~90 s); broker 1 kill -9'd
#                     right after a topic's creation and a producer started
#                     at its restart: every partition acknowledges within
#                     10 s, 3 rounds (tests/cluster/create_kill_e2e.py,
#                     ~75 s); `__meta`
#                     2,200 ops ahead of a broker rejoining on an empty disk:
#                     taken by state transfer, also with a crash in the
#                     middle of its install (tests/cluster/meta_xfer_e2e.py,
#                     about 40 s each); leader stickiness: a backup cut off
#                     from a primary, then restarted behind cut links, must
#                     change no view (cluster_e2e.py sticky, ~60-80 s)
# make soak-cluster   the kill loop for SOAK_CLUSTER_SECONDS (600)
SOAK_CLUSTER_SECONDS ?= 600
CLUSTER_PRODUCER := $(BUILD)/tests/cluster_producer
$(CLUSTER_PRODUCER): $(BUILD)/obj/tests/cluster/cluster_producer.o $(LIBVERITY)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(LDLIBS)
tests: $(CLUSTER_PRODUCER)
CLUSTER_GROUP_CONSUMER := $(BUILD)/tests/cluster_group_consumer
$(CLUSTER_GROUP_CONSUMER): $(BUILD)/obj/tests/cluster/cluster_group_consumer.o $(LIBVERITY)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(LDLIBS)
tests: $(CLUSTER_GROUP_CONSUMER)
# many __meta ops (InitProducer) for the __meta state-transfer test
CLUSTER_META_OPS := $(BUILD)/tests/cluster_meta_ops
$(CLUSTER_META_OPS): $(BUILD)/obj/tests/cluster/cluster_meta_ops.o $(LIBVERITY)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(LDLIBS)
tests: $(CLUSTER_META_OPS)
# verityd with a power cut on SIGUSR2 (every unsynced write undone), for the
# power-loss scenario (tests/cluster/verityd_powerloss.c)
VERITYD_POWERLOSS := $(BUILD)/tests/verityd_powerloss
$(VERITYD_POWERLOSS): $(BUILD)/obj/tests/cluster/verityd_powerloss.o $(BROKERLIB) $(LIBVERITY)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(LDLIBS)
tests: $(VERITYD_POWERLOSS)
CLUSTER_ENV = VERITY_BIN_DIR=$(abspath $(BUILD)/bin) CLUSTER_PRODUCER=$(abspath $(CLUSTER_PRODUCER)) \
              CLUSTER_GROUP_CONSUMER=$(abspath $(CLUSTER_GROUP_CONSUMER)) \
              VERITYD_POWERLOSS=$(abspath $(VERITYD_POWERLOSS)) \
              CLUSTER_META_OPS=$(abspath $(CLUSTER_META_OPS))
.PHONY: test-cluster soak-cluster
test-cluster: $(BINS) $(CLUSTER_PRODUCER) $(VERITYD_POWERLOSS) $(CLUSTER_GROUP_CONSUMER) $(CLUSTER_META_OPS)
	@echo "== tests/cluster/test_harness.py"
	@python3 tests/cluster/test_harness.py
	@echo "== tests/cluster/cluster_e2e.py tools"
	@$(CLUSTER_ENV) python3 tests/cluster/cluster_e2e.py tools
	@echo "== tests/cluster/cluster_e2e.py single-kill"
	@$(CLUSTER_ENV) python3 tests/cluster/cluster_e2e.py single-kill --seconds 10 --every 3
	@echo "== tests/cluster/cluster_e2e.py kill-loop --seconds 60"
	@$(CLUSTER_ENV) python3 tests/cluster/cluster_e2e.py kill-loop --seconds 60 --every 10
	@echo "== tests/cluster/cluster_e2e.py sticky (a cut-off or restarted backup does not unseat a primary that keeps a majority)"
	@$(CLUSTER_ENV) python3 tests/cluster/cluster_e2e.py sticky --cut 4
	@echo "== tests/cluster/stale_read.py"
	@$(CLUSTER_ENV) python3 tests/cluster/stale_read.py
	@echo "== tests/cluster/groups_e2e.py --seconds 60 (consumer groups through a kill loop)"
	@$(CLUSTER_ENV) python3 tests/cluster/groups_e2e.py --seconds 60 --every 10
	@echo "== tests/cluster/groups_e2e.py --down (state transfer of __groups to a broker that was down)"
	@$(CLUSTER_ENV) python3 tests/cluster/groups_e2e.py --down --seconds 45 --rate 20
	@echo "== tests/cluster/dlq_e2e.py (dead letters through a kill loop: exactly once, on every replica)"
	@$(CLUSTER_ENV) python3 tests/cluster/dlq_e2e.py --seconds 40 --every 10
	@echo "== tests/cluster/create_kill_e2e.py --rounds 3 (broker 1 killed right after a topic's creation: every partition acks within 10 s)"
	@$(CLUSTER_ENV) python3 tests/cluster/create_kill_e2e.py --rounds 3
	@echo "== tests/cluster/cluster_e2e.py partition --nodes 3"
	@$(CLUSTER_ENV) python3 tests/cluster/cluster_e2e.py partition --nodes 3
	@echo "== tests/cluster/cluster_e2e.py partition --nodes 5"
	@$(CLUSTER_ENV) python3 tests/cluster/cluster_e2e.py partition --nodes 5
	@echo "== tests/cluster/cluster_e2e.py power-loss"
	@$(CLUSTER_ENV) python3 tests/cluster/cluster_e2e.py power-loss --rounds 2 --every 10
	@echo "== tests/cluster/cluster_e2e.py power-loss --lying-disk --victims 3 (negative control)"
	@$(CLUSTER_ENV) python3 tests/cluster/cluster_e2e.py power-loss --rounds 2 --every 10 --lying-disk --victims 3
	@echo "== tests/cluster/repair_e2e.py transfer (a backup 3,000+ ops behind catches up by state transfer)"
	@$(CLUSTER_ENV) python3 tests/cluster/repair_e2e.py transfer
	@echo "== tests/cluster/repair_e2e.py damage --mode flip (bit flips in a closed segment)"
	@$(CLUSTER_ENV) python3 tests/cluster/repair_e2e.py damage --mode flip
	@echo "== tests/cluster/repair_e2e.py damage --mode truncate (active segment cut in half)"
	@$(CLUSTER_ENV) python3 tests/cluster/repair_e2e.py damage --mode truncate
	@echo "== tests/cluster/repair_e2e.py catchup (a backup ~1,500 ops behind catches up by repair within 20 s under load)"
	@$(CLUSTER_ENV) python3 tests/cluster/repair_e2e.py catchup --ops 1200 --rate 100 --bound 20
	@echo "== tests/cluster/failover_time.py --kills 5 --bound 2 (kill -9 of the primary to the first new ack, each <= 2 s)"
	@$(CLUSTER_ENV) python3 tests/cluster/failover_time.py --kills 5 --bound 2
	@echo "== tests/cluster/repair_e2e.py peer-down (a paused peer: the transfer stalls and moves on)"
	@$(CLUSTER_ENV) python3 tests/cluster/repair_e2e.py peer-down
	@echo "== tests/cluster/rejoin_e2e.py (a broker's data dir deleted, restarted with --rejoin under load)"
	@$(CLUSTER_ENV) python3 tests/cluster/rejoin_e2e.py --seconds 40
	@echo "== tests/cluster/rejoin_e2e.py --warmup 20 --rate 800 (the rejoined broker catches up by state transfer)"
	@$(CLUSTER_ENV) python3 tests/cluster/rejoin_e2e.py --seconds 50 --warmup 20 --rate 800
	@echo "== tests/cluster/rejoin_e2e.py --crash-mid (killed again during its rejoin: resumed from the superblock)"
	@$(CLUSTER_ENV) python3 tests/cluster/rejoin_e2e.py --seconds 40 --crash-mid
	@echo "== tests/cluster/meta_xfer_e2e.py (__meta 2,200 ops ahead of a --rejoin broker: state transfer)"
	@$(CLUSTER_ENV) python3 tests/cluster/meta_xfer_e2e.py
	@echo "== tests/cluster/meta_xfer_e2e.py --crash staged (crash before the install's op is recorded)"
	@$(CLUSTER_ENV) python3 tests/cluster/meta_xfer_e2e.py --crash staged
	@echo "== tests/cluster/meta_xfer_e2e.py --crash recorded (crash after it, before the live state)"
	@$(CLUSTER_ENV) python3 tests/cluster/meta_xfer_e2e.py --crash recorded
	@echo "== tests/cluster/meta_xfer_e2e.py --load-during 1000 (InitProducers go on during the transfer)"
	@$(CLUSTER_ENV) python3 tests/cluster/meta_xfer_e2e.py --load-during 1000
	@echo "== tests/cluster/meta_xfer_e2e.py --keep-disk (a broker down while topics changed: state drops and opens topics)"
	@$(CLUSTER_ENV) python3 tests/cluster/meta_xfer_e2e.py --keep-disk
	@echo "== tests/cluster/meta_xfer_e2e.py --keep-disk --crash staged (the log cut back to the applied op, mark included)"
	@$(CLUSTER_ENV) python3 tests/cluster/meta_xfer_e2e.py --keep-disk --crash staged
soak-cluster: $(BINS) $(CLUSTER_PRODUCER)
	@$(CLUSTER_ENV) python3 tests/cluster/cluster_e2e.py kill-loop --seconds $(SOAK_CLUSTER_SECONDS) --every 10
# make test-cluster-quick (part of make test, about 90 s): the leader kill
# loop on 3 replicating brokers for 60 s (kill -9 of partition 0's primary
# every 10 s), then heal and check: 0 lost, 0 duplicates, order kept, log
# verify on every replica, replicas identical byte for byte.
# It also runs the power-loss scenario (about 25 s): two of three brokers
# (verityd_powerloss) lose every unsynced write at once (once here, twice in
# make test-cluster); nothing
# acknowledged at quorum may be lost. And groups_e2e.py (about 60 s): a
# shared and an ordered consumer group read through kill -9s of the groups'
# coordinator and of partition 0's primary; every acknowledged message is
# acknowledged to each group, redeliveries within docs/GROUPS.md's bound,
# every broker's group state the same.
.PHONY: test-cluster-quick
test-cluster-quick: $(BINS) $(CLUSTER_PRODUCER) $(VERITYD_POWERLOSS) $(CLUSTER_GROUP_CONSUMER)
	@echo "== tests/cluster/cluster_e2e.py kill-loop --seconds 60 (replicated)"
	@$(CLUSTER_ENV) python3 tests/cluster/cluster_e2e.py kill-loop --seconds 60 --every 10
	@echo "== tests/cluster/stale_read.py (a lagging backup answers no stale end; about 15 s)"
	@$(CLUSTER_ENV) python3 tests/cluster/stale_read.py
	@echo "== tests/cluster/cluster_e2e.py power-loss --rounds 1 (two of three brokers; twice in test-cluster)"
	@$(CLUSTER_ENV) python3 tests/cluster/cluster_e2e.py power-loss --rounds 1 --every 10
	@echo "== tests/cluster/groups_e2e.py --seconds 40 (consumer groups, both modes, through a kill loop)"
	@$(CLUSTER_ENV) python3 tests/cluster/groups_e2e.py --seconds 40 --every 10

# ---- pre-authentication abuse figures (issue 14, must-show 4) ---------------
# make bench-abuse: 5,000 connections that never authenticate, 2 GiB length
# prefixes, a slowloris and a brute force of wrong keys at once against a
# verityd with auth_file, while `verity bench` W1 produces with a key: peak
# RSS and W1 throughput (7 pairs without / with the attack; median ratio
# >= 80 % required), then a control (the attack on a second broker). About
# 3.5 minutes; figures in docs/PERFORMANCE.md. A short version (1,000
# connections, one pair, ~25 s) is tests/ops/test_ops_abuse.sh in
# make test-ops. ABUSE_PIN=1 make bench-abuse: the attacker on CPU 0, the
# broker and W1 on CPU 1 (docs/PERFORMANCE.md says what that shows).
.PHONY: bench-abuse
bench-abuse: $(BINS)
	@ABUSE_FULL=1 VERITY_BIN_DIR=$(abspath $(BUILD)/bin) bash tests/ops/test_ops_abuse.sh
