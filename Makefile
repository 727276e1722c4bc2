# kvtier - the whole build. Plain make, explicit object lists, pkg-config.
#
#   make            build daemon, client library, kvtierctl into $(B)/
#   make run        install missing packages, build, run kvtierd in the foreground
#   make test       install missing packages, build, run every test (also ASan/UBSan, aarch64,
#                   the Python package's pytest suite)
#   make test-python  the Python package's tests alone
#   make bench      build and run the benchmark (prints a table, writes $(B)/bench.json)
#   make fuzz       build the libFuzzer targets with clang into build-fuzz/ (docs/testing.md)
#   make fuzz-run   run each fuzz target FUZZ_SECONDS (default 60) on a copy of its corpus
#   make soak       run the soak test for SOAK_SECONDS (default 300) against one daemon
#   make install    PREFIX=/usr/local DESTDIR=

B        ?= build
PREFIX   ?= /usr/local
LIBDIR   ?= $(PREFIX)/lib
CC       ?= cc
LD       ?= ld
OBJCOPY  ?= objcopy
VERSION  := 0.1.0

PKGS     := liburing liblz4 libsystemd libcjson libxxhash
# The remote tier's pool client and seal: the daemon's alone, so libkvtier
# and its users never link them.
REMOTE_PKGS := libmemcached libcrypto
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null)

FUZZ_CC  ?= clang-14
OPT      ?= -O2
CFLAGS   ?= $(OPT) -g
WARN     := -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wno-missing-field-initializers
BASE_CFLAGS := -std=gnu11 $(WARN) -fPIC -D_GNU_SOURCE -DKVT_VERSION=\"$(VERSION)\" \
	-I. -Iclient -ffp-contract=off -fno-strict-aliasing $(PKG_CFLAGS)
ALL_CFLAGS = $(BASE_CFLAGS) $(CFLAGS) $(SAN_FLAGS)
LDLIBS_ALL = $(PKG_LIBS) -lpthread -lm
REMOTE_LIBS := $(shell pkg-config --libs $(REMOTE_PKGS) 2>/dev/null)

ifeq ($(SAN),1)
SAN_FLAGS := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
endif
# The fuzz build (make fuzz): every object carries libFuzzer's coverage
# hooks; only the fuzz targets link its main.
ifeq ($(SAN),fuzz)
CC := $(FUZZ_CC)
SAN_FLAGS := -fsanitize=fuzzer-no-link,address,undefined -fno-omit-frame-pointer \
	-fno-sanitize-recover=undefined
endif

# ---- object lists ----------------------------------------------------------
SIMD_OBJS   := simd/simd.o simd/scalar.o simd/sse2.o simd/avx2.o simd/avx2_outliers.o
# The cold tier alone (test_cold, the cold-record fuzz target use just it).
COLD_MODULES   := cache/chunk.o cache/cold.o cache/cold_tomb.o cache/cold_read.o cache/cold_index.o cache/cold_open.o \
	cache/cold_io.o cache/cold_usage.o cache/cold_names.o cache/domain_bytes.o
HOT_MODULES := cache/chunk.o cache/blocks.o cache/shared_blocks.o cache/hot.o cache/hot_ops.o cache/hot_walk.o cache/hot_evict.o \
	cache/domain_bytes.o
# The remote tier: records, seals and the libmemcached pool client.
REMOTE_MODULES := cache/remote.o cache/remote_seal.o cache/remote_pool_mc.o
CACHE_OBJS  := $(sort $(HOT_MODULES) $(COLD_MODULES) $(REMOTE_MODULES))
PROTO_OBJS  := proto/proto.o proto/prefix.o
DAEMON_OBJS := daemon/config.o daemon/log.o daemon/registry.o daemon/store.o daemon/admin.o daemon/admin_cmd.o daemon/admin_text.o \
	daemon/admin_stats.o daemon/admin_config.o daemon/config_rewrite.o daemon/admin_remote.o daemon/job.o \
	daemon/sockpath.o daemon/lock_owner.o daemon/latency.o daemon/tiers.o daemon/tiers_remote.o daemon/workers.o \
	daemon/session.o daemon/session_attach.o daemon/session_shared.o daemon/server.o daemon/notify.o daemon/accept_pause.o daemon/live.o
CLIENT_OBJS := client/kvtier.o client/region.o client/batch.o client/copier.o

LIB_OBJS    := $(addprefix $(B)/,$(CLIENT_OBJS) $(PROTO_OBJS))
CORE_OBJS   := $(addprefix $(B)/,$(SIMD_OBJS) $(CACHE_OBJS) $(PROTO_OBJS) $(DAEMON_OBJS))

PROGS := $(B)/kvtierd $(B)/kvtierctl $(B)/libkvtier.so $(B)/libkvtier.so.0 $(B)/libkvtier.a

UNIT_TESTS := test_simd test_simd_outliers test_hot test_hot_ops test_hot_stage test_cold test_cold_format \
	test_proto test_llama_state
INTEG_TESTS := test_store_fetch test_prefix_sharing test_absent_and_length \
	test_bad_input test_hot_budget test_isolation test_restart test_make_run test_cold_tier \
	test_systemd_notify test_socket_activation test_install test_admin test_quotas \
	test_region_hugetlb test_empty_packets test_oversize_reply test_client_caps \
	test_attach_timeout test_fd_exhaustion \
	test_build_tree_link test_cold_file_refused \
	test_append_demoted test_drop_race test_drop_durable \
	test_disk_full test_soak \
	test_namespace_limits test_quota_below_chunk \
	test_admin_backpressure test_admin_utf8 test_cold_format_v1 test_outliers_change \
	test_nonfinite_refused test_outlier_accuracy test_copy_path test_remote_tier \
	test_connect_sizes test_loop_disk test_cli test_config_rewrite test_new_user \
	test_fetch_split test_shared_blocks
TEST_BINS := $(addprefix $(B)/tests/,$(UNIT_TESTS) $(INTEG_TESTS))

.PHONY: all deps run test test-python test-build test-asan test-aarch64 bench soak install clean \
	fuzz fuzz-build fuzz-run fuzz-corpus llama llama-deps llama-test-build

all: $(PROGS)

# ---- compile rules ---------------------------------------------------------
$(B)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -MMD -MP -c $< -o $@

# Kernels get their instruction sets per file; dispatch decides at run time.
$(B)/simd/sse2.o: ALL_CFLAGS += -msse2
$(B)/simd/avx2.o $(B)/simd/avx2_outliers.o: ALL_CFLAGS += -mavx2 -mf16c
# clang 14's __builtin_cpu_supports does not know "f16c": in the fuzz build
# the kernel dispatch table alone is built by gcc, uninstrumented (the
# kernels themselves are clang's, with the sanitizers).
ifeq ($(SAN),fuzz)
$(B)/simd/simd.o: CC := gcc
$(B)/simd/simd.o: SAN_FLAGS :=
endif

$(B)/kvtierd: $(B)/daemon/main.o $(CORE_OBJS)
	$(CC) $(ALL_CFLAGS) -o $@ $^ $(LDLIBS_ALL) $(REMOTE_LIBS)

$(B)/libkvtier.so: $(LIB_OBJS) client/libkvtier.map
	$(CC) $(ALL_CFLAGS) -shared -Wl,-soname,libkvtier.so.0 \
		-Wl,--version-script=client/libkvtier.map -o $@ $(LIB_OBJS) $(LDLIBS_ALL)

# The loader looks for the soname: a program linked with -L$(B) -lkvtier
# and an rpath needs this link to start from the build tree.
$(B)/libkvtier.so.0: $(B)/libkvtier.so
	ln -sf libkvtier.so $@

# The static library is one relocatable object whose only global symbols
# are the public kvt_* of the version script: the library's own helpers
# (proto_*, region_*, prefix_*) must not collide with a program's names.
$(B)/libkvtier.a: $(LIB_OBJS) client/libkvtier.map
	@rm -f $@
	grep -o 'kvt_[a-z_]*' client/libkvtier.map > $(B)/libkvtier.syms
	$(LD) -r -o $(B)/libkvtier.o $(LIB_OBJS)
	$(OBJCOPY) --keep-global-symbols=$(B)/libkvtier.syms $(B)/libkvtier.o
	ar rcs $@ $(B)/libkvtier.o

$(B)/kvtierctl: $(B)/client/kvtierctl.o $(B)/client/kvtierctl_metrics.o
	$(CC) $(ALL_CFLAGS) -o $@ $^ $(LDLIBS_ALL)

# ---- llama.cpp glue (make llama LLAMA_DIR=DIR) ------------------------------
# libkvtier-llama: never part of the core build. DIR is a llama.cpp source
# tree built with cmake into DIR/build. make test builds its own llama.cpp
# into build/llama (tests/llama/build_llama.sh), whatever B is.
LLAMA_CACHE  := build/llama
LLAMA_DIR    ?=
LLAMA_BIN     = $(abspath $(LLAMA_DIR))/build/bin
LLAMA_CFLAGS  = -I$(LLAMA_DIR)/include -I$(LLAMA_DIR)/ggml/include
LLAMA_LIBS    = -L$(LLAMA_BIN) -lllama -lggml -lggml-base
LLAMA_OBJS   := $(B)/client/kvtier_llama.o $(B)/client/llama_state.o

$(B)/client/kvtier_llama.o: ALL_CFLAGS += $(LLAMA_CFLAGS)

$(B)/libkvtier-llama.so: $(LLAMA_OBJS) $(B)/libkvtier.so.0 client/libkvtier-llama.map
	$(CC) $(ALL_CFLAGS) -shared -Wl,-soname,libkvtier-llama.so.0 \
		-Wl,--version-script=client/libkvtier-llama.map -o $@ $(LLAMA_OBJS) \
		-L$(B) -lkvtier $(LLAMA_LIBS) -lpthread
$(B)/libkvtier-llama.so.0: $(B)/libkvtier-llama.so
	ln -sf libkvtier-llama.so $@
$(B)/libkvtier-llama.a: $(LLAMA_OBJS)
	@rm -f $@
	ar rcs $@ $^

llama: all
	@[ -n "$(LLAMA_DIR)" ] && [ -e "$(LLAMA_DIR)/include/llama.h" ] || \
		{ echo "make llama needs LLAMA_DIR=<llama.cpp tree built with cmake into DIR/build>" >&2; exit 1; }
	$(MAKE) $(B)/libkvtier-llama.so $(B)/libkvtier-llama.so.0 $(B)/libkvtier-llama.a \
		$(B)/llama_example

# The integration example, built so that it keeps compiling.
$(B)/client/llama_example.o: ALL_CFLAGS += $(LLAMA_CFLAGS)
$(B)/llama_example: $(B)/client/llama_example.o $(B)/libkvtier-llama.so.0
	$(CC) $(ALL_CFLAGS) -o $@ $< -L$(B) -lkvtier-llama -lkvtier $(LLAMA_LIBS) \
		-Wl,-rpath,$(abspath $(B)) -Wl,-rpath,$(LLAMA_BIN)

# The tests' and bench's llama.cpp and models (cached under build/llama).
llama-deps:
	bash tests/llama/build_llama.sh $(LLAMA_CACHE)
	bash tests/llama/make_models.sh $(LLAMA_CACHE)

# The llama.cpp test and bench programs link libllama from LLAMA_DIR,
# found at run time through their rpath.
LLAMA_TEST_LIBS = $(B)/tests/helpers.o $(B)/libkvtier-llama.a $(B)/libkvtier.a \
	$(addprefix $(B)/,$(SIMD_OBJS))
$(B)/tests/test_llama.o $(B)/tests/llama_util.o $(B)/tests/bench_llama.o: ALL_CFLAGS += $(LLAMA_CFLAGS)
$(B)/tests/test_llama: $(B)/tests/test_llama.o $(B)/tests/llama_util.o $(LLAMA_TEST_LIBS)
$(B)/tests/bench_llama: $(B)/tests/bench_llama.o $(B)/tests/llama_util.o $(LLAMA_TEST_LIBS)
$(B)/tests/test_llama $(B)/tests/bench_llama:
	$(CC) $(ALL_CFLAGS) -o $@ $^ $(TEST_LIBS) $(LLAMA_LIBS) -Wl,-rpath,$(LLAMA_BIN)

llama-test-build: test-build
	$(MAKE) llama
	$(MAKE) $(B)/tests/test_llama

# ---- tests -----------------------------------------------------------------
TEST_LIBS = $(LDLIBS_ALL) $(shell pkg-config --libs cmocka 2>/dev/null)

$(B)/tests/test_simd: $(B)/tests/test_simd.o $(addprefix $(B)/,$(SIMD_OBJS))
$(B)/tests/test_simd_outliers: $(B)/tests/test_simd_outliers.o $(addprefix $(B)/,$(SIMD_OBJS))
$(B)/tests/test_hot: $(B)/tests/test_hot.o $(addprefix $(B)/,$(HOT_MODULES))
$(B)/tests/test_hot_ops: $(B)/tests/test_hot_ops.o $(addprefix $(B)/,$(HOT_MODULES))
$(B)/tests/test_hot_stage: $(B)/tests/test_hot_stage.o $(addprefix $(B)/,$(HOT_MODULES))
$(B)/tests/test_cold: $(B)/tests/test_cold.o $(addprefix $(B)/,$(COLD_MODULES))
$(B)/tests/test_cold_format: $(B)/tests/test_cold_format.o $(B)/tests/cold_file_edit.o \
	$(addprefix $(B)/,$(COLD_MODULES))
$(B)/tests/test_proto: $(B)/tests/test_proto.o $(B)/proto/proto.o
$(B)/tests/test_llama_state: $(B)/tests/test_llama_state.o $(B)/client/llama_state.o
# The tests' raw-protocol helpers use proto_*, which libkvtier.a hides.
$(addprefix $(B)/tests/,$(INTEG_TESTS)): %: %.o $(B)/tests/helpers.o $(B)/libkvtier.a $(B)/proto/proto.o \
	$(addprefix $(B)/,$(SIMD_OBJS))

$(B)/tests/test_cli $(B)/tests/test_config_rewrite $(B)/tests/test_new_user: $(B)/tests/cmd_util.o
$(B)/tests/test_soak: $(B)/tests/soak_client.o $(B)/tests/soak_events.o
$(B)/tests/test_cold_format_v1 $(B)/tests/test_restart: $(B)/tests/cold_file_edit.o $(B)/cache/chunk.o
# The remote test names records as the daemon does (remote_record_name).
$(B)/tests/test_remote_tier: $(B)/tests/memcached_util.o $(B)/proto/prefix.o $(addprefix $(B)/,$(REMOTE_MODULES)) \
	$(B)/cache/chunk.o
$(B)/tests/test_remote_tier: TEST_LIBS += $(REMOTE_LIBS)

$(B)/tests/bench: $(B)/tests/bench.o $(B)/tests/bench_outliers.o $(B)/tests/bench_remote.o $(B)/tests/bench_loop.o \
	$(B)/tests/bench_listing.o \
	$(B)/tests/helpers.o $(B)/tests/memcached_util.o $(B)/libkvtier.a $(addprefix $(B)/,$(SIMD_OBJS))

$(TEST_BINS) $(B)/tests/bench:
	$(CC) $(ALL_CFLAGS) -o $@ $^ $(TEST_LIBS)

test-build: all $(TEST_BINS)

# aarch64: the kernels and their test, cross-built and run under qemu-user.
AARCH64_CC ?= aarch64-linux-gnu-gcc
A64 := $(B)/aarch64
A64_SIMD := simd/simd.c simd/scalar.c simd/neon.c
$(A64)/test_simd $(A64)/test_simd_outliers: $(A64)/%: tests/%.c $(A64_SIMD) simd/simd.h simd/kernels.h simd/outlier_ops.h simd/outlier_scan_block.h \
	tests/simd_util.h
	@mkdir -p $(A64)
	$(AARCH64_CC) -std=gnu11 $(WARN) -O2 -D_GNU_SOURCE -I. -ffp-contract=off \
		-o $@ $(A64_SIMD) $< -lcmocka -lm

deps:
	@bash tests/deps.sh

# llama.cpp is built here when missing; a failed build fails make test.
test: deps
	$(MAKE) llama-deps
	$(MAKE) llama-test-build LLAMA_DIR=$(LLAMA_CACHE)/llama.cpp
	$(MAKE) $(A64)/test_simd $(A64)/test_simd_outliers
	$(MAKE) B=build-asan SAN=1 OPT=-O1 llama-test-build LLAMA_DIR=$(LLAMA_CACHE)/llama.cpp
	bash tests/run.sh $(B) build-asan $(A64)

# The Python package's tests alone (make test runs them too, via run.sh).
test-python: all
	PYTHONDONTWRITEBYTECODE=1 KVTIER_BUILD=$(B) $(PYTHON) -m pytest -q -p no:cacheprovider tests/python

# What to type next goes out before the daemon's own log lines.
run: deps all
	@mkdir -p var
	@echo "kvtierd --dev: data socket $(CURDIR)/var/kvtier.sock, admin socket $(CURDIR)/var/admin.sock"
	@echo "  admin, from another shell in $(CURDIR):  $(B)/kvtierctl health   (or stats, metrics, contexts)"
	@echo "  clients:  kvt_connect(\"var/kvtier.sock\", ...) from $(CURDIR), or KVTIER_SOCKET=$(CURDIR)/var/kvtier.sock"
	@echo "  (README.md has a complete client program and the command that builds it)"
	$(B)/kvtierd --dev

# KVTIER_BENCH_ONLY=llama runs only the llama.cpp restore bench.
bench: all $(B)/tests/bench
	bash tests/llama/build_llama.sh $(LLAMA_CACHE)
	bash tests/llama/make_models.sh $(LLAMA_CACHE) bench
	$(MAKE) llama LLAMA_DIR=$(LLAMA_CACHE)/llama.cpp
	$(MAKE) $(B)/tests/helpers.o $(B)/tests/bench_llama LLAMA_DIR=$(LLAMA_CACHE)/llama.cpp
	[ "$$KVTIER_BENCH_ONLY" = llama ] || $(B)/tests/bench $(B)
	[ -n "$$KVTIER_BENCH_ONLY" ] && [ "$$KVTIER_BENCH_ONLY" != llama ] || \
		KVTIER_BUILD=$(B) $(B)/tests/bench_llama

# ---- fuzzing (docs/testing.md) ---------------------------------------------
FUZZ_B       := build-fuzz
FUZZ_SECONDS ?= 60
FUZZ_TARGETS := fuzz_frames fuzz_admin fuzz_cold_records
FUZZ_BINS    := $(addprefix $(B)/tests/fuzz/,$(FUZZ_TARGETS))
COLD_OBJS    := $(addprefix $(B)/,$(COLD_MODULES))

$(B)/tests/fuzz/fuzz_frames $(B)/tests/fuzz/fuzz_admin: %: %.o \
	$(B)/tests/fuzz/fuzz_server.o $(B)/tests/fuzz/fuzz_util.o $(CORE_OBJS)
$(B)/tests/fuzz/fuzz_cold_records: %: %.o $(B)/tests/fuzz/fuzz_util.o $(COLD_OBJS)
$(FUZZ_BINS):
	$(CC) $(ALL_CFLAGS) -fsanitize=fuzzer -o $@ $^ $(LDLIBS_ALL) $(REMOTE_LIBS)
$(B)/tests/fuzz/make_corpus: $(B)/tests/fuzz/make_corpus.o $(B)/tests/fuzz/fuzz_util.o $(B)/proto/proto.o \
	$(COLD_OBJS)
	$(CC) $(ALL_CFLAGS) -o $@ $^ $(LDLIBS_ALL)

fuzz-build: $(FUZZ_BINS) $(B)/tests/fuzz/make_corpus

fuzz: deps
	$(MAKE) B=$(FUZZ_B) SAN=fuzz OPT=-O1 fuzz-build

# Runs on a scratch copy of tests/fuzz/corpus, so the tree is not modified;
# fails if any target finds a crash (kept in the scratch dir, path printed).
fuzz-run: fuzz
	bash tests/fuzz/run.sh $(FUZZ_B) $(FUZZ_SECONDS) $(FUZZ_TARGETS)

# Regenerate the committed seed corpus (the hand-made seeds stay).
fuzz-corpus: fuzz
	$(FUZZ_B)/tests/fuzz/make_corpus tests/fuzz/corpus

# The soak test for as long as asked (make test runs it for 25 s).
SOAK_SECONDS ?= 300
soak: test-build
	KVTIER_BUILD=$(B) $(B)/tests/test_soak $(SOAK_SECONDS)

# ---- install ---------------------------------------------------------------
SBINDIR     ?= $(PREFIX)/sbin
UNITDIR     ?= $(PREFIX)/lib/systemd/system
SYSUSERSDIR ?= $(PREFIX)/lib/sysusers.d
TMPFILESDIR ?= $(PREFIX)/lib/tmpfiles.d
MANDIR      ?= $(PREFIX)/share/man
SYSCONFDIR  ?= /etc
UNITS       := systemd/kvtierd.service systemd/kvtierd.socket systemd/kvtierd-admin.socket
MAN_PAGES   := $(wildcard docs/man/*.1 docs/man/*.3 docs/man/*.8)

# The Python package goes where the system's python3 finds it for PREFIX
# (Debian: PREFIX/lib/python3.N/dist-packages); PYTHON_SITE overrides.
PYTHON      ?= /usr/bin/python3
PYTHON_SITE ?= $(shell $(PYTHON) -c 'import sys; v = sys.version_info; \
	d = "dist" if any(p.endswith("dist-packages") for p in sys.path) else "site"; \
	print("$(PREFIX)/lib/python%d.%d/%s-packages" % (v[0], v[1], d))' 2>/dev/null)

install: all
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(SBINDIR) $(DESTDIR)$(LIBDIR) \
		$(DESTDIR)$(PREFIX)/include $(DESTDIR)$(LIBDIR)/pkgconfig
	install -m 0755 $(B)/kvtierd $(DESTDIR)$(SBINDIR)/kvtierd
	if [ -x $(B)/kvtierctl ]; then \
		install -m 0755 $(B)/kvtierctl $(DESTDIR)$(PREFIX)/bin/kvtierctl; fi
	install -m 0755 $(B)/libkvtier.so $(DESTDIR)$(LIBDIR)/libkvtier.so.$(VERSION)
	ln -sf libkvtier.so.$(VERSION) $(DESTDIR)$(LIBDIR)/libkvtier.so.0
	ln -sf libkvtier.so.0 $(DESTDIR)$(LIBDIR)/libkvtier.so
	install -m 0644 $(B)/libkvtier.a $(DESTDIR)$(LIBDIR)/libkvtier.a
	install -m 0644 client/kvtier.h $(DESTDIR)$(PREFIX)/include/kvtier.h
	sed -e 's|@PREFIX@|$(PREFIX)|; s|@LIBDIR@|$(LIBDIR)|; s|@VERSION@|$(VERSION)|' \
		client/kvtier.pc.in > $(DESTDIR)$(LIBDIR)/pkgconfig/kvtier.pc
	install -d $(DESTDIR)$(UNITDIR) $(DESTDIR)$(SYSUSERSDIR) $(DESTDIR)$(TMPFILESDIR) \
		$(DESTDIR)$(SYSCONFDIR)/kvtier
	for u in $(UNITS); do \
		sed -e 's|@SBINDIR@|$(SBINDIR)|g' $$u > $(DESTDIR)$(UNITDIR)/$${u##*/} && \
		chmod 0644 $(DESTDIR)$(UNITDIR)/$${u##*/} || exit 1; done
	install -m 0644 systemd/kvtier.sysusers $(DESTDIR)$(SYSUSERSDIR)/kvtier.conf
	install -m 0644 systemd/kvtier.tmpfiles $(DESTDIR)$(TMPFILESDIR)/kvtier.conf
	# The example config never overwrites an operator's edited one.
	[ -e $(DESTDIR)$(SYSCONFDIR)/kvtier/kvtierd.conf ] || \
		install -m 0644 systemd/kvtierd.conf $(DESTDIR)$(SYSCONFDIR)/kvtier/kvtierd.conf
	# libkvtier-llama when it was built (make llama LLAMA_DIR=...).
	if [ -e $(B)/libkvtier-llama.so ]; then \
		install -m 0755 $(B)/libkvtier-llama.so $(DESTDIR)$(LIBDIR)/libkvtier-llama.so.$(VERSION) && \
		ln -sf libkvtier-llama.so.$(VERSION) $(DESTDIR)$(LIBDIR)/libkvtier-llama.so.0 && \
		ln -sf libkvtier-llama.so.0 $(DESTDIR)$(LIBDIR)/libkvtier-llama.so && \
		install -m 0644 $(B)/libkvtier-llama.a $(DESTDIR)$(LIBDIR)/libkvtier-llama.a && \
		install -m 0644 client/kvtier_llama.h $(DESTDIR)$(PREFIX)/include/kvtier_llama.h || exit 1; fi
	if [ -n "$(PYTHON_SITE)" ]; then \
		install -d $(DESTDIR)$(PYTHON_SITE)/kvtier && \
		install -m 0644 client/python/kvtier/*.py $(DESTDIR)$(PYTHON_SITE)/kvtier/; fi
	for m in $(MAN_PAGES); do \
		d=$(DESTDIR)$(MANDIR)/man$${m##*.}; \
		install -d $$d && install -m 0644 $$m $$d/ || exit 1; done

clean:
	rm -rf build build-asan build-fuzz

# build/llama holds llama.cpp's own cmake build (and its .d files): not ours.
-include $(shell find $(B) -path $(LLAMA_CACHE) -prune -o -name '*.d' -print 2>/dev/null)
