#!/bin/sh
# Runs every wsbridge-bench scenario RUNS times against a wsbridge binary, one fresh bridge (and
# nginx + php-fpm where PHP answers) per run, writes each run's JSON into OUT, and prints the
# medians that docs/benchmarks.md tabulates. Each run is bounded by the tool's own -timeout.
#
#   go build -o bin/wsbridge ./cmd/wsbridge && go build -o bin/wsbridge-bench ./cmd/wsbridge-bench
#   cmd/wsbridge-bench/run.sh bin/wsbridge bench-out 3
set -eu
BIN=${1:?usage: run.sh WSBRIDGE_BINARY OUTDIR [RUNS]}
OUT=${2:?usage: run.sh WSBRIDGE_BINARY OUTDIR [RUNS]}
RUNS=${3:-3}
BENCH=${BENCH:-$(dirname "$BIN")/wsbridge-bench}
mkdir -p "$OUT"

i=1
while [ "$i" -le "$RUNS" ]; do
	"$BENCH" -bridge "$BIN" -scenario idle -counts 1000,10000,19800 -json "$OUT/idle-$i.json"
	"$BENCH" -bridge "$BIN" -scenario connect -n 10000 -json "$OUT/connect-go-$i.json"
	"$BENCH" -bridge "$BIN" -scenario connect -n 2000 -php -json "$OUT/connect-php-$i.json"
	"$BENCH" -bridge "$BIN" -scenario broadcast -n 10000 -m 100 -rate 5 -json "$OUT/broadcast-$i.json"
	"$BENCH" -bridge "$BIN" -scenario push -n 10000 -json "$OUT/push-$i.json"
	"$BENCH" -bridge "$BIN" -scenario webhook -php -clients 8 -duration 10s -json "$OUT/webhook-$i.json"
	# The same with nginx and php-fpm on CPU 0 and everything else on the other CPUs.
	if [ "$(nproc)" -ge 2 ]; then
		"$BENCH" -bridge "$BIN" -scenario webhook -php -clients 8 -duration 10s -php-cpus 0 -json "$OUT/webhookpin-$i.json"
	fi
	i=$((i + 1))
done

# Medians over the runs (the middle value; for an even count, the upper middle).
med() { jq -s "map($2) | sort | .[length/2|floor]" "$OUT"/$1-*.json; }
echo "medians over $RUNS run(s) in $OUT:"
for k in 0 1 2; do
	echo "idle $(med idle ".idle.points[$k].conns") conns: RSS/conn $(med idle ".idle.points[$k].rss_per_conn_kib") KiB," \
		"heap/conn $(med idle ".idle.points[$k].heap_per_conn_kib") KiB, stacks/conn $(med idle ".idle.points[$k].stack_per_conn_kib") KiB"
done
echo "connect, Go hook: $(med connect-go .connect.conns_per_sec) conns/s, handshake p50 $(med connect-go .connect.handshake.p50_ms) ms"
echo "connect, PHP hook: $(med connect-php .connect.conns_per_sec) conns/s, handshake p50 $(med connect-php .connect.handshake.p50_ms) ms"
for k in 0 1; do
	echo "$(med broadcast ".broadcast.phases[$k].name"): $(med broadcast ".broadcast.phases[$k].deliveries_per_sec") deliveries/s," \
		"p50 $(med broadcast ".broadcast.phases[$k].latency.p50_ms") p90 $(med broadcast ".broadcast.phases[$k].latency.p90_ms")" \
		"p99 $(med broadcast ".broadcast.phases[$k].latency.p99_ms") max $(med broadcast ".broadcast.phases[$k].latency.max_ms") ms;" \
		"CPU µs per delivery: bridge $(med broadcast ".broadcast.phases[$k].bridge_cpu_us_per_delivery")," \
		"clients $(med broadcast ".broadcast.phases[$k].tool_cpu_us_per_delivery")"
done
for k in 0 1 2; do
	echo "$(med push ".push.phases[$k].name"): $(med push ".push.phases[$k].items_per_sec") pushes/s," \
		"delivery p50 $(med push ".push.phases[$k].latency.p50_ms") p99 $(med push ".push.phases[$k].latency.p99_ms") ms"
done
for w in webhook webhookpin; do
	ls "$OUT"/$w-*.json >/dev/null 2>&1 || continue
	echo "$w: bridge $(med $w .webhook.bridge.per_sec) msg/s, wrk $(med $w .webhook.wrk.per_sec) req/s," \
		"ratio $(med $w .webhook.ratio); added p50 $(med $w .webhook.added_p50_ms) ms;" \
		"CPU µs per message: bridge $(med $w .webhook.bridge.bridge_cpu_us_per_message), clients $(med $w .webhook.bridge.tool_cpu_us_per_message)"
done
