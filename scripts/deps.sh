#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Makes sure what a make target needs is installed. Usage: scripts/deps.sh demo|test|bench|servers
# As root, missing Debian packages are installed with apt-get; otherwise the exact command
# to run is printed and the script fails.
set -euo pipefail
target=${1:-test}

need=()
have_cmd() { command -v "$1" >/dev/null 2>&1; }
have_pc() { have_cmd pkg-config && pkg-config --exists "$1"; }
# A library the linker finds (-lNAME), whatever the multiarch layout: ask the compiler.
have_lib() { printf 'int main(void){return 0;}\n' | cc -x c - -o /dev/null -l"$1" >/dev/null 2>&1; }

have_cmd cmake || need+=(cmake)
have_cmd cc || need+=(build-essential)
have_cmd make || need+=(make)
case "$target" in
test)
  have_cmd pkg-config || need+=(pkg-config)
  have_pc cmocka || need+=(libcmocka-dev)
  have_cmd clang || need+=(clang)
  have_pc libdw || need+=(libdw-dev) # leak stacks with file:line (optional for users, tested here)
  have_pc libunwind || need+=(libunwind-dev) # fast leak stack capture (optional for users, tested here)
  have_cmd valgrind || need+=(valgrind)
  ;;
bench)
  have_cmd pkg-config || need+=(pkg-config)
  have_lib jemalloc || need+=(libjemalloc-dev)
  have_lib tcmalloc || need+=(libgoogle-perftools-dev)
  have_lib mimalloc || need+=(libmimalloc-dev)
  { [ -x /usr/bin/python3 ] && /usr/bin/python3 -c 'import matplotlib' 2>/dev/null; } || need+=(python3-matplotlib)
  ;;
servers) # make bench-servers: the reference servers, the clients, python3 for the report
  have_cmd redis-server || need+=(redis-server)
  have_cmd redis-benchmark || need+=(redis-tools)
  have_cmd nginx || need+=(nginx-light)
  have_cmd wrk || need+=(wrk)
  have_cmd python3 || need+=(python3)
  ;;
demo) ;;
*) echo "usage: $0 demo|test|bench|servers" >&2; exit 2 ;;
esac

[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -eq 0 ] && have_cmd apt-get; then
  echo "deps: installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
else
  echo "deps: missing packages for 'make $target'. Install them with:" >&2
  echo "  sudo apt-get install ${need[*]}" >&2
  exit 1
fi
