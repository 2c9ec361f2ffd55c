#!/usr/bin/env bash
# Load test of POST /kap/v1/dosing-sessions: kapbridge serve on Redis against
# the bare-gin baseline (cmd/loadbaseline) that only decodes the same JSON,
# both driven by wrk with the same Lua script (a new session id on every
# request) in the same run. Prints requests/s, p50 and p99 latency of each
# and the gateway/baseline throughput ratio, and the CPU time each server
# (plus redis-server for the gateway) spent per request, which depends much
# less on what else the machine runs. Not part of the test suite.
#
#   scripts/load.sh                 # 20 s per server, 2 wrk threads, 16 connections
#   DURATION=60s CONNS=32 scripts/load.sh
#   ROLE=all scripts/load.sh        # also run the delivery workers (NDJSON) in the gateway
#
# Needs redis-server (apt: redis-server) and wrk (installed with apt-get if
# missing). Everything runs on loopback in a temporary directory that is
# removed at the end.
set -euo pipefail

DURATION=${DURATION:-20s}
THREADS=${THREADS:-2}
CONNS=${CONNS:-16}
ROLE=${ROLE:-api}
FSYNC=${FSYNC:-always}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d)
PIDS=()

cleanup() {
	for pid in "${PIDS[@]}"; do
		kill "$pid" 2>/dev/null || true
	done
	for pid in "${PIDS[@]}"; do
		wait "$pid" 2>/dev/null || true
	done
	rm -rf "$WORK"
}
trap cleanup EXIT

if ! command -v wrk >/dev/null; then
	echo "installing wrk (apt-get)..." >&2
	apt-get install -y wrk >/dev/null
fi
command -v redis-server >/dev/null || { echo "redis-server is required (apt-get install redis-server)" >&2; exit 1; }

freeport() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }

waitport() { # waitport PORT NAME
	for _ in $(seq 1 200); do
		if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
		sleep 0.05
	done
	echo "$2 did not start on port $1" >&2
	exit 1
}

echo "building kapbridge and loadbaseline..." >&2
(cd "$ROOT" && go build -o "$WORK/kapbridge" ./cmd/kapbridge && go build -o "$WORK/loadbaseline" ./cmd/loadbaseline)

RPORT=$(freeport)
mkdir -p "$WORK/redis"
redis-server --port "$RPORT" --bind 127.0.0.1 --dir "$WORK/redis" --appendonly yes --appendfsync "$FSYNC" \
	--save "" --daemonize no --protected-mode no --logfile "$WORK/redis/redis.log" &
RPID=$!
PIDS+=($RPID)
waitport "$RPORT" redis-server

KEY=kap_load_$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
HASH=$(printf %s "$KEY" | sha256sum | cut -d' ' -f1)
cat >"$WORK/kapbridge.json" <<JSON
{
  "tenants": [{"name": "loadtest", "apiKeys": [{"name": "load", "sha256": "$HASH"}],
               "rateLimit": {"perSecond": 1000000, "burst": 1000000}}]
}
JSON

GPORT=$(freeport)
BPORT=$(freeport)
KAPBRIDGE_CONFIG="$WORK/kapbridge.json" KAPBRIDGE_REDIS_URL="redis://127.0.0.1:$RPORT/0" \
	KAPBRIDGE_ADDR="127.0.0.1:$GPORT" KAPBRIDGE_DATA_DIR="$WORK/data" KAPBRIDGE_ROLE="$ROLE" \
	"$WORK/kapbridge" serve 2>"$WORK/kapbridge.log" &
GPID=$!
PIDS+=($GPID)
"$WORK/loadbaseline" --addr "127.0.0.1:$BPORT" 2>"$WORK/loadbaseline.log" &
BPID=$!
PIDS+=($BPID)
waitport "$GPORT" "kapbridge serve"
waitport "$BPORT" loadbaseline

# The request body: the testdata dosing session with its id replaced by a
# placeholder the Lua script fills with a new id per request.
python3 - "$ROOT/testdata/kap/16-dosing-c001-1.json" >"$WORK/body.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
d["id"] = "__ID__"
print(json.dumps(d, separators=(",", ":")))
PY

cat >"$WORK/post.lua" <<LUA
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("tid", threads)
end
local f = assert(io.open("$WORK/body.json", "r"))
local template = f:read("*a")
f:close()
local n = 0
local run = os.getenv("RUN_ID") or "r"
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["X-API-Key"] = "$KEY"
function request()
  n = n + 1
  local id = "ds-load-" .. run .. "-" .. tostring(tid) .. "-" .. n
  return wrk.format(nil, "/kap/v1/dosing-sessions", nil, (template:gsub("__ID__", id)))
end
local statuses = {}
function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end
function done(summary, latency, requests)
  io.write(string.format("RESULT rps=%.1f p50_ms=%.2f p99_ms=%.2f requests=%d errors=%d non2xx=%d\n",
    summary.requests / (summary.duration / 1e6), latency:percentile(50) / 1000, latency:percentile(99) / 1000,
    summary.requests, summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    summary.errors.status))
end
LUA

cputicks() { # cputicks PID...: user+system clock ticks of the processes
	local t=0
	for p in "$@"; do
		t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat")))
	done
	echo "$t"
}

run() { # run NAME PORT PID...: wrk against the port; CPU of the PIDs per request
	local name=$1 port=$2
	shift 2
	echo "wrk: $name for $DURATION, $THREADS threads, $CONNS connections..." >&2
	local before
	before=$(cputicks "$@")
	RUN_ID="$name$RANDOM" wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" --latency -s "$WORK/post.lua" "http://127.0.0.1:$port" >"$WORK/$name.out"
	local ticks=$(($(cputicks "$@") - before))
	local line
	line=$(grep '^RESULT' "$WORK/$name.out" | sed "s/^RESULT/$name/")
	local reqs
	reqs=$(echo "$line" | tr ' ' '\n' | grep '^requests=' | cut -d= -f2)
	echo "$line cpu_ms_per_req=$(python3 -c "print(f'{$ticks * 1000 / $(getconf CLK_TCK) / max($reqs, 1):.2f}')")"
}

# A short warm-up of each, then the measured runs.
DURATION=3s run warmup-baseline "$BPORT" "$BPID" >/dev/null
DURATION=3s run warmup-gateway "$GPORT" "$GPID" >/dev/null
B=$(run baseline "$BPORT" "$BPID")
G=$(run gateway "$GPORT" "$GPID" "$RPID")
echo "$B"
echo "$G"
field() { echo "$1" | tr ' ' '\n' | grep "^$2=" | cut -d= -f2; }
python3 - "$(field "$G" rps)" "$(field "$B" rps)" <<'PY'
import sys
g, b = float(sys.argv[1]), float(sys.argv[2])
print(f"ratio gateway/baseline throughput = {g / b:.4f} (baseline is {b / g:.1f}x faster)")
PY
if [ "$(field "$G" non2xx)" != 0 ] || [ "$(field "$G" errors)" != 0 ]; then
	echo "the gateway answered errors: see below" >&2
	tail -5 "$WORK/kapbridge.log" >&2
	exit 1
fi
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), load average $(cut -d' ' -f1-3 /proc/loadavg); redis appendfsync $FSYNC; gateway role $ROLE" >&2
echo "(cpu_ms_per_req: CPU time of the server process, and of redis-server for the gateway, per request)" >&2
