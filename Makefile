# Verity: one non-recursive Makefile.
#   make            build release binaries into build/
#   make test       install deps, build, run every test, then the unit suites
#                   again under ASan+UBSan, then the fuzz target for
#                   TEST_FUZZ_SECONDS (60)
#   make run        install deps, build, start a single-node broker
#   make bench      storage + broker benchmarks, written into docs/PERFORMANCE.md
#                   (WITH_PEERS=1 runs Redis Streams / NATS JetStream in the same sitting)
#   make fuzz       run the libFuzzer targets (FUZZ_SECONDS each)
#   make fmt        clang-format every C file
# Variables: BUILD (output dir, default build), MODE (release|debug|asan),
# WERROR=1 (CI sets it through .ci/run).

BUILD ?= build
MODE ?= release
CC ?= gcc
FUZZ_SECONDS ?= 60
# Seconds the fuzz target runs inside `make test` (0 skips it).
TEST_FUZZ_SECONDS ?= 60

DEB_PKGS := build-essential pkg-config libssl-dev libevent-dev \
            protobuf-c-compiler libprotobuf-c-dev libjansson-dev \
            libcunit1-dev libsqlite3-dev clang libclang-rt-14-dev

PKG_LIBS := libevent libevent_pthreads libcrypto libssl libprotobuf-c jansson
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
BROKER_SRC  := $(filter-out broker/main.c,$(wildcard broker/*.c)) $(GROUP_SRC)
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
EXAMPLES := $(patsubst tools/examples/%.c,$(BUILD)/examples/%,$(EXAMPLE_SRC))

UNIT_TESTS  := $(patsubst tests/unit/%.c,$(BUILD)/tests/%,$(wildcard tests/unit/test_*.c))
INTEG_TESTS := $(patsubst tests/integ/%.c,$(BUILD)/tests/%,$(wildcard tests/integ/test_*.c))
TEST_SUPPORT:= $(call obj,$(wildcard tests/support/*.c))

.PHONY: all deps run test test-unit test-integ check-asan bench fuzz fmt clean
# Keep every object (make would otherwise delete test objects as
# intermediates and rebuild them on the next `make run` or `make test`).
.SECONDARY:
all: $(BINS) $(EXAMPLES) $(UNIT_TESTS) $(INTEG_TESTS)

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
$(BUILD)/gen/proto/verity.pb-c.c $(BUILD)/gen/proto/verity.pb-c.h: $(PROTO_SRC)
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

# ---- tests -----------------------------------------------------------------
# Each test binary is a CUnit program that exits non-zero on any failure.
# Tests find the binaries through VERITY_BIN_DIR.
test: deps
	@$(MAKE) --no-print-directory all
	@$(MAKE) --no-print-directory test-unit test-integ
	@$(MAKE) --no-print-directory check-asan
	@if [ "$(TEST_FUZZ_SECONDS)" != 0 ]; then FUZZ_DIR=$(abspath $(BUILD))/fuzz bash tests/fuzz/run.sh $(TEST_FUZZ_SECONDS); fi
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

run: deps
	@$(MAKE) --no-print-directory all
	@bash tools/run.sh $(BUILD)

bench: deps
	@$(MAKE) --no-print-directory all
	@bash tools/perf_report.sh $(BUILD)

fuzz: deps
	@bash tests/fuzz/run.sh $(FUZZ_SECONDS)

fmt:
	clang-format -i $$(git ls-files '*.c' '*.h')

clean:
	rm -rf build build-*

-include $(shell find $(BUILD)/obj -name '*.d' 2>/dev/null)

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
soak-project: all
	VERITY_PROJECT_SOAK=1 VERITY_BIN_DIR=$(abspath $(BUILD)/bin) $(BUILD)/tests/test_project
	VERITY_PROJECT_SOAK=1 VERITY_BIN_DIR=$(abspath $(BUILD)/bin) $(BUILD)/tests/test_project_pg
