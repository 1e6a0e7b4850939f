#!/usr/bin/env bash
# Counts the instructions the bridge executes during one wsbridge-bench run, with the bridge under
# valgrind's callgrind: unlike CPU time, the count hardly moves with the machine's load, so two
# builds (or HTTP against FastCGI webhooks) can be compared on a busy machine.
#
#   cmd/wsbridge-bench/callgrind.sh BENCH BRIDGE OUT [wsbridge-bench flags...]
#   e.g. cmd/wsbridge-bench/callgrind.sh bin/wsbridge-bench bin/wsbridge /tmp/cg -scenario webhook -php -fcgi -duration 12s
#
# prints "instructions messages". Run it at two durations and take the difference of both over
# the difference of the messages: that is the cost per message, the start-up cancelled out.
#
# Callgrind asserts on the signals of the Go runtime: preemption (SIGURG) is turned off with
# GODEBUG=asyncpreemptoff=1, and since it also fails on the stop signal, the counters are dumped
# (callgrind_control -d) every second while the bridge runs and summed afterwards; what is lost
# is the last second, when the bridge is idle (wrk's part of the run) or stopping.
set -euo pipefail
[ $# -ge 3 ] || { sed -n 2,10p "$0" >&2; exit 2; }
bench=$1 bridge=$(realpath "$2") out=$3
shift 3
command -v valgrind >/dev/null || { echo "valgrind not installed: apt-get install valgrind" >&2; exit 1; }
rm -f "$out" "$out".[0-9]* "$out.pid"
wrap=$(mktemp)
trap 'rm -f "$wrap"; [ -z "${dumper:-}" ] || kill "$dumper" 2>/dev/null || true' EXIT
cat >"$wrap" <<EOF
#!/bin/sh
echo \$\$ >"$out.pid"
GODEBUG="\${GODEBUG:+\$GODEBUG,}asyncpreemptoff=1" exec valgrind --tool=callgrind --callgrind-out-file="$out" "$bridge" "\$@"
EOF
chmod +x "$wrap"
(
    while [ ! -s "$out.pid" ]; do sleep 0.2; done
    pid=$(cat "$out.pid")
    while kill -0 "$pid" 2>/dev/null; do
        callgrind_control -d "$pid" >/dev/null 2>&1 || true
        sleep 1
    done
) &
dumper=$!
"$bench" -bridge "$wrap" "$@" >"$out.log" 2>&1 || { tail -20 "$out.log" >&2; exit 1; }
kill "$dumper" 2>/dev/null || true
wait "$dumper" 2>/dev/null || true
dumper=""
ir=$(cat "$out".[0-9]* 2>/dev/null | awk '/^summary:/ {s += $2} END {printf "%d", s}')
msgs=$(grep "via bridge" "$out.log" | awk '{for (i = 1; i <= NF; i++) if ($i == "messages") s += $(i-1)} END {printf "%d", s}')
echo "$ir $msgs"
