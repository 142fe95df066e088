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

# The four builds compile in one make of $(JOBS) jobs (CMake's makefiles join its jobserver,
# so that one build's serial steps leave no core idle while another has work). The other
# builds' tests run after that, one build at a time: a threaded test sharing the cores with
# more than it has (compiling, another build's tests) slows and costs more, its threads
# waiting on each other. Valgrind runs one thread at a time, so the Valgrind build's tests
# run as soon as it is compiled, first, while the others compile.
test:
	@scripts/deps.sh test
	+@$(MAKE) --no-print-directory --output-sync=target -j $(JOBS) MAKE_TEST=1 \
	  test-valgrind compile-checked compile-asan compile-tsan
	@$(MAKE) --no-print-directory MAKE_TEST=1 test-checked test-asan test-tsan
	@scripts/test-summary.sh build-checked build-asan build-tsan build-valgrind

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
	CC=gcc $(CMAKE) -S . -B build-checked -DCMAKE_BUILD_TYPE=RelWithDebInfo -DBP_WERROR=ON -DBP_DEBUG_CHECKS=ON
	+$(CMAKE) --build build-checked $(BUILD_JOBS)

# The sanitizer builds and the Valgrind one build no shared library: only the checked build's
# install test uses it.
test-asan: $(call COMPILED,asan)
	cd build-asan && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:allocator_may_return_null=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 ctest --output-on-failure -j $(JOBS)

compile-asan:
	CC=clang $(CMAKE) -S . -B build-asan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DBP_WERROR=ON -DBP_DEBUG_CHECKS=ON -DBP_SANITIZE=address -DBP_BUILD_BENCH=OFF -DBP_BUILD_SHARED=OFF
	+$(CMAKE) --build build-asan $(BUILD_JOBS)

# No examples under TSan: their tests (test_servers) do not run there.
test-tsan: $(call COMPILED,tsan)
	cd build-tsan && TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1:allocator_may_return_null=1 BP_TEST_SCALE=tsan ctest --output-on-failure -j $(JOBS)

compile-tsan:
	CC=gcc $(CMAKE) -S . -B build-tsan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DBP_WERROR=ON -DBP_SANITIZE=thread -DBP_BUILD_BENCH=OFF -DBP_BUILD_EXAMPLES=OFF -DBP_BUILD_SHARED=OFF
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

# Only the programs the valgrind_ entries run are built (target valgrind_programs). Compiled
# by the recipe itself, so that in make test the tests follow at once on the same job.
test-valgrind:
	+@$(MAKE) --no-print-directory compile-valgrind
	cd build-valgrind && ctest --output-on-failure -j $(JOBS) -R valgrind_

compile-valgrind:
	CC=gcc $(CMAKE) -S . -B build-valgrind -DCMAKE_BUILD_TYPE=RelWithDebInfo -DBP_WERROR=ON -DBP_VALGRIND=ON -DBP_BUILD_BENCH=OFF -DBP_BUILD_EXAMPLES=OFF -DBP_BUILD_SHARED=OFF
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
