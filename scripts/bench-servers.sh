#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# make bench-servers: the example servers against the real thing, with real clients.
#   bytepool-resp vs redis-server: redis-benchmark -t ping,set,get -c 50, -P 1 and -P 16,
#     -d 64 and -d 4096; and the resident memory of 10 000 idle connections.
#   bytepool-http vs nginx: wrk on "/" (14 bytes) and "/64k" at 1, 50 and 400 connections.
# Installs what it needs (scripts/deps.sh servers), builds the release build (make all),
# runs every server on 127.0.0.1 on free ports (redis-server: one thread, no persistence;
# nginx: one worker, no access log, the same bytes from a temporary directory), and writes
# docs/servers-results.md and docs/servers-results.json. Each row is run ROUNDS times, the
# servers taking turns, and the median is reported. Every server runs pinned to one CPU and
# every client to another (taskset), so that neither takes the other's CPU and each server
# gets the same one.
# Settings (environment): ROUNDS (3), RESP_N1 (200000 requests at -P 1), RESP_N16 (2000000
# at -P 16), WRK_SECONDS (4), IDLE (10000 connections), SERVER_CPU (0), CLIENT_CPU (1; with
# a single CPU nothing is pinned), OUT (docs/servers-results).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
ROUNDS=${ROUNDS:-3}
RESP_N1=${RESP_N1:-200000}
RESP_N16=${RESP_N16:-2000000}
WRK_SECONDS=${WRK_SECONDS:-4}
IDLE=${IDLE:-10000}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
OUT=${OUT:-$ROOT/docs/servers-results}

# Servers on SERVER_CPU, clients on CLIENT_CPU; children (nginx's worker, redis-server's
# threads) inherit it.
if [ "$(nproc)" -ge 2 ] && command -v taskset >/dev/null; then
  ON_SERVER_CPU=(taskset -c "$SERVER_CPU")
  ON_CLIENT_CPU=(taskset -c "$CLIENT_CPU")
  PINNING="Each server is pinned to CPU $SERVER_CPU and each client to CPU $CLIENT_CPU (taskset)"
else
  ON_SERVER_CPU=()
  ON_CLIENT_CPU=()
  PINNING="Nothing is pinned: the servers and the clients share the CPUs"
fi

"$ROOT/scripts/deps.sh" servers
make -C "$ROOT" all >/dev/null
BIN=$ROOT/build
for b in examples/bytepool-resp examples/bytepool-http bench/bytepool-idle-clients; do
  [ -x "$BIN/$b" ] || { echo "bench-servers: $BIN/$b was not built" >&2; exit 1; }
done

WORK=$(mktemp -d "${TMPDIR:-/tmp}/bench-servers.XXXXXX")
chmod 755 "$WORK" # nginx's worker may run as another user: it reads the files from here
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  [ -n "${KEEP_WORK:-}" ] || rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Room for the idle connections on both ends (the servers raise their own limit to this).
ulimit -n $((IDLE + 1024)) 2>/dev/null || ulimit -n "$(ulimit -Hn)"

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_port() { # wait_port PORT PID: until something accepts on PORT, PID still alive
  for _ in $(seq 200); do
    kill -0 "$2" 2>/dev/null || { echo "bench-servers: server $2 exited" >&2; return 1; }
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.05
  done
  echo "bench-servers: nothing listens on $1" >&2
  return 1
}

SERVER_PID=
start() { # start NAME PORT: starts one of the four servers, sets SERVER_PID
  local name=$1 port=$2
  case "$name" in
  redis)
    "${ON_SERVER_CPU[@]}" redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --protected-mode no \
      --daemonize no --io-threads 1 --maxclients $((IDLE + 100)) --dir "$WORK" \
      --logfile "$WORK/redis.log" &
    ;;
  bytepool-resp) "${ON_SERVER_CPU[@]}" "$BIN/examples/bytepool-resp" --port "$port" >"$WORK/resp.log" 2>&1 & ;;
  nginx) "${ON_SERVER_CPU[@]}" nginx -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" -e "$WORK/nginx/error.log" -g "pid $WORK/nginx/nginx.pid;" \
           2>"$WORK/nginx/stderr.log" & ;;
  bytepool-http) "${ON_SERVER_CPU[@]}" "$BIN/examples/bytepool-http" --port "$port" >"$WORK/http.log" 2>&1 & ;;
  esac
  SERVER_PID=$!
  PIDS+=("$SERVER_PID")
  wait_port "$port" "$SERVER_PID"
}

stop() {
  kill "$SERVER_PID" 2>/dev/null || true
  wait "$SERVER_PID" 2>/dev/null || true
}

# nginx serves bytepool-http's bytes, written by bytepool-http itself.
nginx_setup() { # nginx_setup PORT
  mkdir -p "$WORK/nginx/www" "$WORK/nginx/tmp"
  "$BIN/examples/bytepool-http" --write-resources "$WORK/nginx/www"
  chmod -R a+rX "$WORK/nginx"
  cat >"$WORK/nginx/nginx.conf" <<EOF
worker_processes 1;
daemon off;
error_log $WORK/nginx/error.log warn;
worker_rlimit_nofile 20000;
events { worker_connections 4096; use epoll; }
http {
  access_log off;
  client_body_temp_path $WORK/nginx/tmp/body;
  proxy_temp_path $WORK/nginx/tmp/proxy;
  fastcgi_temp_path $WORK/nginx/tmp/fastcgi;
  uwsgi_temp_path $WORK/nginx/tmp/uwsgi;
  scgi_temp_path $WORK/nginx/tmp/scgi;
  types { }
  default_type text/plain;
  sendfile on;
  tcp_nopush on;
  tcp_nodelay on;
  keepalive_requests 1000000000;
  keepalive_timeout 300s;
  open_file_cache max=16 inactive=600s;
  open_file_cache_valid 600s;
  server {
    listen 127.0.0.1:$1;
    root $WORK/nginx/www;
    location = / { rewrite ^ /hello break; }
    location = /64k { }
  }
}
EOF
}

RESULTS=$WORK/results.tsv # kind, config, test, server, round, value, server CPU us per request
: >"$RESULTS"
record() { printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$@" >>"$RESULTS"; }

# CPU time (user + system, in clock ticks) of the server and its children (nginx's worker).
cpu_ticks() {
  local total=0 pid
  for pid in "$1" $(pgrep -P "$1" || true); do
    total=$((total + $(awk '{ print $14 + $15 }' "/proc/$pid/stat" 2>/dev/null || echo 0)))
  done
  echo "$total"
}
TICK_US=$((1000000 / $(getconf CLK_TCK)))
per_request_us() { awk -v t="$1" -v us="$TICK_US" -v n="$2" 'BEGIN { printf "%.2f", (n > 0 ? t * us / n : 0) }'; }

# One redis-benchmark test at a time, so that the server's CPU time is that test's. Its CSV
# row: "PING_INLINE","94161.95",...
run_resp() { # run_resp SERVER PORT PIPELINE SIZE ROUND
  local n=$RESP_N1 test t0 line
  [ "$3" -gt 1 ] && n=$RESP_N16
  for test in ping_inline ping_mbulk set get; do
    t0=$(cpu_ticks "$SERVER_PID")
    line=$("${ON_CLIENT_CPU[@]}" redis-benchmark -h 127.0.0.1 -p "$2" -c 50 -n "$n" -P "$3" -d "$4" -t "$test" --csv 2>"$WORK/rb.err" |
      tr -d '"' | awk -F, 'NR > 1 && NF > 1 { print $1 "\t" $2; exit }')
    [ -n "$line" ] || { echo "bench-servers: redis-benchmark $test against $1 gave nothing:" >&2; cat "$WORK/rb.err" >&2; exit 1; }
    record resp "P$3 d$4" "${line%%$'\t'*}" "$1" "$5" "${line#*$'\t'}" \
      "$(per_request_us $(($(cpu_ticks "$SERVER_PID") - t0)) "$n")"
  done
}

run_wrk() { # run_wrk SERVER PORT PATH CONNECTIONS ROUND
  local out t0 requests
  t0=$(cpu_ticks "$SERVER_PID")
  out=$("${ON_CLIENT_CPU[@]}" wrk -t1 -c"$4" -d"${WRK_SECONDS}s" "http://127.0.0.1:$2$3")
  if grep -qE 'Non-2xx|Socket errors' <<<"$out"; then
    echo "bench-servers: wrk against $1 $3 -c$4 saw errors:" >&2
    echo "$out" >&2
    exit 1
  fi
  requests=$(awk '/requests in/ { print $1 }' <<<"$out")
  record http "c$4" "$3" "$1" "$5" "$(awk '/^Requests\/sec:/ { print $2 }' <<<"$out")" \
    "$(per_request_us $(($(cpu_ticks "$SERVER_PID") - t0)) "$requests")"
}

rss_kb() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }

run_idle() { # run_idle SERVER PORT: resident bytes per idle connection
  sleep 1
  local before after client
  before=$(rss_kb "$SERVER_PID")
  "${ON_CLIENT_CPU[@]}" "$BIN/bench/bytepool-idle-clients" 127.0.0.1 "$2" "$IDLE" >"$WORK/idle.out" &
  client=$!
  PIDS+=("$client")
  for _ in $(seq 600); do
    grep -q ready "$WORK/idle.out" 2>/dev/null && break
    kill -0 "$client" 2>/dev/null || { echo "bench-servers: the idle client failed against $1" >&2; exit 1; }
    sleep 0.1
  done
  grep -q ready "$WORK/idle.out" || { echo "bench-servers: the idle client timed out against $1" >&2; exit 1; }
  sleep 3 # Redis trims idle clients' buffers in its cron; let it
  after=$(rss_kb "$SERVER_PID")
  kill "$client"
  wait "$client" 2>/dev/null || true
  record idle "$IDLE connections" "bytes per connection" "$1" 1 "$(((after - before) * 1024 / IDLE))" 0
}

load() { awk '{ print $1 }' /proc/loadavg; }
LOAD_BEFORE=$(load)
echo "bench-servers: load average $LOAD_BEFORE before the runs; $ROUNDS rounds; $PINNING"

for round in $(seq "$ROUNDS"); do
  for pipeline in 1 16; do
    for size in 64 4096; do
      # the servers take turns going first
      order="redis bytepool-resp"
      [ $(((round + pipeline + size) % 2)) -eq 1 ] && order="bytepool-resp redis"
      for server in $order; do
        port=$(free_port)
        start "$server" "$port"
        run_resp "$server" "$port" "$pipeline" "$size" "$round"
        stop
        echo "  resp round $round -P $pipeline -d $size $server done"
      done
    done
  done
  for path in / /64k; do
    order="nginx bytepool-http"
    [ $((round % 2)) -eq 0 ] && order="bytepool-http nginx"
    for server in $order; do
      port=$(free_port)
      [ "$server" = nginx ] && nginx_setup "$port"
      start "$server" "$port"
      for conns in 1 50 400; do run_wrk "$server" "$port" "$path" "$conns" "$round"; done
      stop
      echo "  http round $round $path $server done"
    done
  done
done
for server in redis bytepool-resp; do
  port=$(free_port)
  start "$server" "$port"
  run_idle "$server" "$port"
  stop
done
LOAD_AFTER=$(load)

mkdir -p "$(dirname "$OUT")"
# The model name alone ("AMD EPYC") stands for several generations: family and model too.
CPU=$(awk -F': ' '/^model name/ && !n { n = $2 } /^cpu family/ && !f { f = $2 } /^model\t/ && !m { m = $2 }
                  END { printf "%s (family %s, model %s)", n, f, m }' /proc/cpuinfo)
python3 - "$RESULTS" "$OUT" "$CPU" "$(nproc)" "$LOAD_BEFORE" "$LOAD_AFTER" "$ROUNDS" "$RESP_N1" "$RESP_N16" \
  "$WRK_SECONDS" "$(redis-server --version | awk '{ print $3 }')" "$(nginx -v 2>&1 | awk -F/ '{ print $2 }')" \
  "$PINNING" "${ON_SERVER_CPU[*]:+$SERVER_CPU}" "${ON_CLIENT_CPU[*]:+$CLIENT_CPU}" <<'EOF'
import json, statistics, sys
from collections import defaultdict
(tsv, out, cpu_model, cores, load0, load1, rounds, n1, n16, secs, redis_v, nginx_v, pinning, server_cpu,
 client_cpu) = sys.argv[1:]
values = defaultdict(list)
cpu = defaultdict(list)
order = []
for line in open(tsv):
    kind, config, test, server, rnd, value, us = line.rstrip("\n").split("\t")
    key = (kind, config, test)
    if key not in order:
        order.append(key)
    values[key + (server,)].append(float(value))
    cpu[key + (server,)].append(float(us))
pairs = {"resp": ("bytepool-resp", "redis"), "idle": ("bytepool-resp", "redis"), "http": ("bytepool-http", "nginx")}
rows = []
for kind, config, test in order:
    ours, theirs = pairs[kind]
    a = statistics.median(values[(kind, config, test, ours)])
    b = statistics.median(values[(kind, config, test, theirs)])
    row = {"kind": kind, "config": config, "test": test, "bytepool": a, "reference": b,
           "reference_server": theirs, "ratio": a / b if b else None,
           "bytepool_runs": values[(kind, config, test, ours)], "reference_runs": values[(kind, config, test, theirs)]}
    if kind != "idle":
        row["bytepool_cpu_us"] = statistics.median(cpu[(kind, config, test, ours)])
        row["reference_cpu_us"] = statistics.median(cpu[(kind, config, test, theirs)])
    rows.append(row)
meta = {"cpu": cpu_model, "cores": int(cores), "load_before": float(load0), "load_after": float(load1), "rounds": int(rounds),
        "redis": redis_v, "nginx": nginx_v, "resp_requests": {"P1": int(n1), "P16": int(n16)}, "wrk_seconds": int(secs),
        "server_cpu": int(server_cpu) if server_cpu else None, "client_cpu": int(client_cpu) if client_cpu else None}
json.dump({"meta": meta, "rows": rows}, open(out + ".json", "w"), indent=1)
md = [f"# bytepool servers against redis-server {redis_v} and nginx {nginx_v}", "",
      f"CPU: {cpu_model} ({cores} cores). {pinning}. Load average {load0} before, "
      f"{load1} after. Median of {rounds} rounds. Requests per second, and the server's CPU time (user + "
      f"system) per request in microseconds. The bytepool servers run with their defaults (--spin 20: after a "
      f"batch of events they poll epoll for 20 µs before sleeping in it; bytepool-http sends the /64k body "
      f"from a file with sendfile, a file region of its output queue); redis-server with one thread and no "
      f"persistence; nginx with one worker, sendfile, open_file_cache and no access log. "
      f"`make bench-servers` (scripts/bench-servers.sh) wrote this.", "",
      "| protocol | run | test | bytepool | reference | bytepool / reference | CPU µs per request, bytepool / reference |",
      "|---|---|---|---:|---:|---:|---:|"]
for r in rows:
    if r["kind"] == "resp":
        run = f"redis-benchmark -c 50 -{r['config'].replace('P', 'P ').replace(' d', ' -d ')}"
    elif r["kind"] == "idle":
        run = f"{r['config']}, resident bytes each (lower is better)"
    else:
        run = f"wrk -t1 -c {r['config'][1:]} -d {secs}s"
    ref = f"{r['reference_server']} {r['reference']:,.0f}"
    ratio = f"{r['ratio']:.2f}" if r["ratio"] is not None else "-"
    name = {"resp": "RESP", "idle": "RESP", "http": "HTTP"}[r["kind"]]
    us = f"{r['bytepool_cpu_us']:.2f} / {r['reference_cpu_us']:.2f}" if "bytepool_cpu_us" in r else ""
    md.append(f"| {name} | {run} | {r['test']} | {r['bytepool']:,.0f} | {ref} | {ratio} | {us} |")
open(out + ".md", "w").write("\n".join(md) + "\n")
print("\n".join(md))
EOF
echo "bench-servers: wrote $OUT.md and $OUT.json"
