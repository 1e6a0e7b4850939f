#!/usr/bin/env bash
# Runs the chat example (examples/php/chat) on three wsbridge nodes that share Redis (or NATS),
# behind nginx as the load balancer: each browser tab may land on a different node, and they
# still chat, because every push, reply and join goes through the broker to every node.
#
#   browser ─▶ nginx :PORT ─┬▶ wsbridge n1 :PORT+1 ─┐
#                           ├▶ wsbridge n2 :PORT+2 ─┼─▶ Redis (or NATS)      PHP (php -S :PHP_PORT)
#                           └▶ wsbridge n3 :PORT+3 ─┘   webhooks and page requests go to PHP
#
# Environment (all optional):
#   PORT=8080        nginx, the URL to open; node i listens on PORT+i (open those to pick a node)
#   PHP_PORT=8000    PHP's built-in server (the nodes' upstream and webhook target)
#   API_PORT=8180    node i's internal push API is on API_PORT+i; PHP calls node 1's
#   BROKER=redis     redis or nats
#   REDIS_PORT=6390  the redis-server (or nats-server, NATS_PORT=4232) this script starts
#   BIN=...          where to build the wsbridge binary (default: a temporary directory)
#   DEMO_CHECK=1     start, check that two browsers on two nodes chat (chromium, examples/php/e2e's
#                    playwright-core), stop, and exit 0/1
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$ROOT"

PORT="${PORT:-8080}"
PHP_PORT="${PHP_PORT:-8000}"
API_PORT="${API_PORT:-8180}"
BROKER="${BROKER:-redis}"
REDIS_PORT="${REDIS_PORT:-6390}"
NATS_PORT="${NATS_PORT:-4232}"
NODES=3

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'run-cluster: %s\n' "$*" >&2; exit 1; }
need() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || die "$1 is required (Debian package ${2:-$1})"; }

need go golang
need curl
need php php-cli
php -r 'exit(extension_loaded("curl") ? 0 : 1);' || die "the PHP curl extension is required (Debian package php-curl)"
need nginx
case "$BROKER" in
    redis) need redis-server ;;
    nats) need nats-server ;;
    *) die "BROKER must be redis or nats, not $BROKER" ;;
esac
NGINX="$(command -v nginx || echo /usr/sbin/nginx)"

TMP_DIR="$(mktemp -d)"
BIN="${BIN:-$TMP_DIR/wsbridge}"
PIDS=()
cleanup() {
    trap '' INT TERM
    trap - EXIT
    # The nodes first (SIGTERM: each sends its connections' close webhooks), then the rest.
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    if [ -n "${PHP_PID:-}" ]; then
        kill -- "-$PHP_PID" 2>/dev/null || kill "$PHP_PID" 2>/dev/null || true
        wait "$PHP_PID" 2>/dev/null || true
    fi
    rm -rf "$TMP_DIR"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

log "building wsbridge into $BIN"
CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o "$BIN" ./cmd/wsbridge

if command -v openssl >/dev/null 2>&1; then
    SECRET="$(openssl rand -hex 16)"
else
    SECRET="$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
fi

# --- the broker's engine -------------------------------------------------------------------
if [ "$BROKER" = redis ]; then
    log "starting redis-server on 127.0.0.1:$REDIS_PORT"
    redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --save '' --appendonly no --dir "$TMP_DIR" >"$TMP_DIR/redis.log" 2>&1 &
    PIDS+=($!)
    ENGINE=(WSBRIDGE_BROKER=redis "WSBRIDGE_REDIS_URL=redis://127.0.0.1:$REDIS_PORT/0")
    engine_up() { (exec 3<>"/dev/tcp/127.0.0.1/$REDIS_PORT") 2>/dev/null; }
else
    log "starting nats-server (JetStream) on 127.0.0.1:$NATS_PORT"
    mkdir -p "$TMP_DIR/nats"
    "$(command -v nats-server || echo /usr/sbin/nats-server)" -a 127.0.0.1 -p "$NATS_PORT" -js -sd "$TMP_DIR/nats" >"$TMP_DIR/nats.log" 2>&1 &
    PIDS+=($!)
    ENGINE=(WSBRIDGE_BROKER=nats "WSBRIDGE_NATS_URL=nats://127.0.0.1:$NATS_PORT")
    engine_up() { grep -q 'Server is ready' "$TMP_DIR/nats.log"; }
fi
for _ in $(seq 1 50); do engine_up && break; sleep 0.1; done
engine_up || die "$BROKER did not start (port in use?): $(tail -3 "$TMP_DIR"/*.log)"

# --- PHP -----------------------------------------------------------------------------------
# One PHP for the three nodes: the sessions and the chat's data are on its disk. It calls node
# 1's push API; the broker carries each call to the whole cluster.
SETSID=()
command -v setsid >/dev/null 2>&1 && SETSID=(setsid)
log "starting PHP on 127.0.0.1:$PHP_PORT"
WSBRIDGE_WEBHOOK_SECRET="$SECRET" \
WSBRIDGE_API="http://127.0.0.1:$((API_PORT + 1))" \
CHAT_DATA_DIR="$TMP_DIR/data" \
PHP_CLI_SERVER_WORKERS=6 \
    "${SETSID[@]}" php -d variables_order=EGPCS -d session.save_path="$TMP_DIR" \
    -S "127.0.0.1:$PHP_PORT" -t examples/php/chat/public >"$TMP_DIR/php.log" 2>&1 &
PHP_PID=$!

# --- three nodes ---------------------------------------------------------------------------
for i in $(seq 1 "$NODES"); do
    log "starting wsbridge n$i on 127.0.0.1:$((PORT + i)) (push API 127.0.0.1:$((API_PORT + i)))"
    env "${ENGINE[@]}" \
        WSBRIDGE_NODE_ID="n$i" \
        WSBRIDGE_LISTEN="127.0.0.1:$((PORT + i))" \
        WSBRIDGE_INTERNAL_LISTEN="127.0.0.1:$((API_PORT + i))" \
        WSBRIDGE_UPSTREAM="http://127.0.0.1:$PHP_PORT" \
        WSBRIDGE_WEBHOOK_URL="http://127.0.0.1:$PHP_PORT/webhook.php" \
        WSBRIDGE_WEBHOOK_SECRET="$SECRET" \
        WSBRIDGE_TRUSTED_PROXIES=127.0.0.1 \
        "$BIN" >"$TMP_DIR/n$i.log" 2>&1 &
    PIDS+=($!)
done

# --- nginx, the load balancer --------------------------------------------------------------
mkdir -p "$TMP_DIR/nginx-tmp"
USER_LINE=""
[ "$(id -u)" -eq 0 ] && USER_LINE="user root;" # its workers write their temp files in $TMP_DIR
UPSTREAMS=""
for i in $(seq 1 "$NODES"); do UPSTREAMS+="        server 127.0.0.1:$((PORT + i));"$'\n'; done
cat >"$TMP_DIR/nginx.conf" <<CONF
$USER_LINE
daemon off;
worker_processes 1;
pid $TMP_DIR/nginx.pid;
error_log $TMP_DIR/nginx-error.log;
events { worker_connections 512; }
http {
    access_log off;
    client_body_temp_path $TMP_DIR/nginx-tmp/body;
    proxy_temp_path $TMP_DIR/nginx-tmp/proxy;
    fastcgi_temp_path $TMP_DIR/nginx-tmp/fastcgi;
    uwsgi_temp_path $TMP_DIR/nginx-tmp/uwsgi;
    scgi_temp_path $TMP_DIR/nginx-tmp/scgi;
    # Round robin: consecutive sockets (a second tab, a second browser) go to different nodes.
    upstream wsbridge {
$UPSTREAMS    }
    map \$http_upgrade \$connection_upgrade { default upgrade; '' close; }
    server {
        listen 127.0.0.1:$PORT;
        location / {
            proxy_pass http://wsbridge;
            proxy_http_version 1.1;
            proxy_set_header Upgrade \$http_upgrade;
            proxy_set_header Connection \$connection_upgrade;
            proxy_set_header Host \$http_host;
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
            proxy_read_timeout 1h; # wsbridge pings every 25 s; a socket is idle far longer than 60 s
            proxy_buffering off;
        }
    }
}
CONF
log "starting nginx on 127.0.0.1:$PORT"
"$NGINX" -p "$TMP_DIR" -c "$TMP_DIR/nginx.conf" -e "$TMP_DIR/nginx-error.log" &
PIDS+=($!)

# Ready when every node answers /readyz (broker reached, PHP up) and nginx serves the page.
ready=0
for _ in $(seq 1 100); do
    for pid in "${PIDS[@]}"; do kill -0 "$pid" 2>/dev/null || die "a process exited during startup (ports in use?): $(tail -n 3 "$TMP_DIR"/*.log)"; done
    up=1
    for i in $(seq 1 "$NODES"); do
        curl -fsS -o /dev/null --max-time 1 "http://127.0.0.1:$((API_PORT + i))/readyz" 2>/dev/null || up=0
    done
    if [ "$up" -eq 1 ] && curl -fsS -o /dev/null --max-time 1 "http://127.0.0.1:$PORT/" 2>/dev/null; then
        ready=1
        break
    fi
    sleep 0.1
done
[ "$ready" -eq 1 ] || die "the cluster did not become ready within 10 s: $(tail -n 3 "$TMP_DIR"/n*.log)"

if [ "${DEMO_CHECK:-}" = "1" ]; then
    [ -d examples/php/e2e/node_modules/playwright-core ] ||
        die "playwright-core is missing: npm ci --prefix examples/php/e2e"
    stats="$(curl -fsS --max-time 5 "http://127.0.0.1:$((API_PORT + 2))/v1/stats")"
    case "$stats" in
        *'"nodes":["n1","n2","n3"]'*) log "ok:   every node lists the three nodes" ;;
        *) die "GET /v1/stats on n2 does not list n1, n2 and n3: $stats" ;;
    esac
    curl -fsS --max-time 5 "http://127.0.0.1:$PORT/" | grep -q 'action="/login.php"' ||
        die "nginx does not serve the login page"
    log "ok:   the login page is served through nginx"
    NODE_URLS="http://127.0.0.1:$((PORT + 1)),http://127.0.0.1:$((PORT + 2))" node examples/php/e2e/cluster.mjs ||
        die "two browsers on two nodes could not chat (node logs in $TMP_DIR, removed on exit): $(tail -n 5 "$TMP_DIR"/n*.log)"
    log "self-check passed"
    exit 0
fi

cat <<EOF

  Open http://127.0.0.1:$PORT/ in two browsers (or a private window) and log in as ann
  (admin), bob or cat; the password is "demo". nginx sends each socket to the next node; to
  choose, open a node directly: http://127.0.0.1:$((PORT + 1))/ .. http://127.0.0.1:$((PORT + NODES))/
  Which node holds which connection: curl http://127.0.0.1:$((API_PORT + 1))/v1/stats (and :$((API_PORT + 2)), …)

  Press Ctrl-C to stop.

