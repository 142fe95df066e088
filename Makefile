# SPDX-License-Identifier: MIT
# Thin wrapper over CMake. The two commands the README promises:
#   make demo   build the library and run Netty's PoolBufTest in C (bytepool-demo)
#   make test   build and run every test: a checked build (gcc, -Werror, internal checks),
#               ASan+UBSan (clang), TSan (gcc) and Valgrind; plus install and consumer checks
#   make bench  the benchmark suite (make bench-quick: about 2 minutes)
#   make bench-servers  the example servers against redis-server and nginx (docs/servers-results.md)
JOBS ?= $(shell nproc 2>/dev/null || echo 2)
# Debian's python3 (its matplotlib draws the benchmark plots)
PYTHON ?= $(shell test -x /usr/bin/python3 && echo /usr/bin/python3 || echo python3)
CMAKE ?= cmake
# The release build in build/ (demo, bench): every option that changes the code spelled out,
# so a CMake cache left with other values (debug checks, sanitizers) cannot leak into what
# the benchmarks measure.
RELEASE_OPTIONS = -DCMAKE_BUILD_TYPE=Release -DBP_BUILD_TESTS=OFF -DBP_DEBUG_CHECKS=OFF -DBP_WERROR=OFF \
                  -DBP_SANITIZE= -DBP_VALGRIND=OFF -DBP_FUZZ=OFF

.PHONY: all demo test test-checked test-asan test-tsan test-valgrind compile-checked compile-asan compile-tsan compile-valgrind fuzz bench bench-quick bench-servers install clean

all:
	@scripts/deps.sh demo
	$(CMAKE) -S . -B build $(RELEASE_OPTIONS)
	$(CMAKE) --build build -j $(JOBS)

# The demo builds quietly (the build's output is shown only when it fails) and then runs.
demo:
	@scripts/deps.sh demo
	@mkdir -p build
	@echo "Building bytepool (release) ..."
	@{ $(CMAKE) -S . -B build $(RELEASE_OPTIONS) && $(CMAKE) --build build -j $(JOBS); } >build/make-demo.log 2>&1 \
	  || { cat build/make-demo.log; echo "build failed (output above)"; exit 1; }
	@./build/examples/bytepool-demo

# make test, on $(JOBS) cores: the TSan and Valgrind builds compile first (the smallest; TSan's
# tests take longest). Then four jobs at once: TSan's tests, and at the lowest priority
# (nice 19) the checked and ASan builds' compiles and Valgrind's tests, which so take only
# the cores that TSan's tests leave idle (TSan sleeps 1 s as each program exits; the last
# long entries run alone) and leave its threads the cores they need. The checked and ASan
# tests run last, both builds at once, so that one build's long entries overlap the other's.
test:
	@scripts/deps.sh test
	+@$(MAKE) --no-print-directory --output-sync=target -j $(JOBS) MAKE_TEST=1 compile-tsan compile-valgrind
	+@$(MAKE) --no-print-directory --output-sync=target -j 4 MAKE_TEST=1 \
	  test-tsan idle-compile-checked idle-compile-asan idle-test-valgrind
	+@$(MAKE) --no-print-directory --output-sync=target -j 2 MAKE_TEST=1 test-checked test-asan
	@scripts/test-summary.sh build-checked build-asan build-tsan build-valgrind

idle-%:
	+@nice -n 19 $(MAKE) --no-print-directory $*

# Each build alone: compile with $(JOBS) jobs, then run its tests (make test: compiled already).
BUILD_JOBS = -j $(JOBS)
ifdef MAKE_TEST
BUILD_JOBS =
COMPILED =
else
COMPILED = compile-$(1)
endif

test-checked: $(call COMPILED,checked)
	cd build-checked && ctest --output-on-failure -j $(JOBS)

compile-checked:
	CC=gcc $(CMAKE) -S . -B build-checked -DCMAKE_BUILD_TYPE=RelWithDebInfo -DBP_DEBUG_INFO=-g1 -DBP_WERROR=ON -DBP_DEBUG_CHECKS=ON
	+$(CMAKE) --build build-checked $(BUILD_JOBS)

# The sanitizer builds and the Valgrind one build no shared library: only the checked build's
# install test uses it.
test-asan: $(call COMPILED,asan)
	cd build-asan && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:allocator_may_return_null=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 ctest --output-on-failure -j $(JOBS)

compile-asan:
	CC=clang $(CMAKE) -S . -B build-asan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DBP_DEBUG_INFO=-g1 "-DBP_TEST_OPTIMIZE=-O0;-g" -DBP_WERROR=ON -DBP_DEBUG_CHECKS=ON -DBP_SANITIZE=address -DBP_BUILD_BENCH=OFF -DBP_BUILD_SHARED=OFF
	+$(CMAKE) --build build-asan $(BUILD_JOBS)

# No examples under TSan: their tests (test_servers) do not run there.
test-tsan: $(call COMPILED,tsan)
	cd build-tsan && TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1:allocator_may_return_null=1 BP_TEST_SCALE=tsan ctest --output-on-failure -j $(JOBS)

compile-tsan:
	CC=gcc $(CMAKE) -S . -B build-tsan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DBP_DEBUG_INFO=-g1 -DBP_TEST_OPTIMIZE=-Og -DBP_WERROR=ON -DBP_SANITIZE=thread -DBP_BUILD_BENCH=OFF -DBP_BUILD_EXAMPLES=OFF -DBP_BUILD_SHARED=OFF
	+$(CMAKE) --build build-tsan $(BUILD_JOBS)

# Benchmarks: Release build, every backend in the same run. The full run writes its JSON
# and plots to docs/; the quick one to bench/results/.
bench:
	@scripts/deps.sh bench
	$(CMAKE) -S . -B build $(RELEASE_OPTIONS)
	$(CMAKE) --build build -j $(JOBS)
	@mkdir -p bench/results
	./build/bench/bytepool-bench --json docs/bench-results.json
	$(PYTHON) bench/plot.py docs/bench-results.json docs

bench-quick:
	@scripts/deps.sh bench
	$(CMAKE) -S . -B build $(RELEASE_OPTIONS)
	$(CMAKE) --build build -j $(JOBS)
	@mkdir -p bench/results
	./build/bench/bytepool-bench --quick --json bench/results/results-quick.json
	$(PYTHON) bench/plot.py bench/results/results-quick.json bench/results

# bytepool-resp against redis-server (redis-benchmark) and bytepool-http against nginx (wrk);
# installs what it needs, builds the release build, writes docs/servers-results.{md,json}.
bench-servers:
	scripts/bench-servers.sh

# Only the programs the valgrind_ entries run are built (target valgrind_programs).
test-valgrind: $(call COMPILED,valgrind)
	cd build-valgrind && ctest --output-on-failure -j $(JOBS) -R valgrind_

compile-valgrind:
	CC=gcc $(CMAKE) -S . -B build-valgrind -DCMAKE_BUILD_TYPE=RelWithDebInfo -DBP_DEBUG_INFO=-g1 -DBP_TEST_OPTIMIZE=-Og -DBP_WERROR=ON -DBP_VALGRIND=ON -DBP_BUILD_BENCH=OFF -DBP_BUILD_EXAMPLES=OFF -DBP_BUILD_SHARED=OFF
	+$(CMAKE) --build build-valgrind $(BUILD_JOBS) --target valgrind_programs

# libFuzzer over the API with ASan+UBSan (clang); FUZZ_SECONDS to taste.
FUZZ_SECONDS ?= 120
fuzz:
	@scripts/deps.sh test
	CC=clang $(CMAKE) -S . -B build-fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo -DBP_SANITIZE=address -DBP_FUZZ=ON -DBP_BUILD_BENCH=OFF -DBP_BUILD_EXAMPLES=OFF
	$(CMAKE) --build build-fuzz -j $(JOBS) --target fuzz_api_libfuzzer
	@mkdir -p build-fuzz/corpus
	cd build-fuzz && ASAN_OPTIONS=allocator_may_return_null=1 ./tests/fuzz_api_libfuzzer -max_total_time=$(FUZZ_SECONDS) -max_len=4096 corpus

install: all
	$(CMAKE) --install build $(if $(PREFIX),--prefix $(PREFIX))

clean:
	rm -rf build build-checked build-asan build-tsan build-valgrind build-fuzz
