#!/usr/bin/env bash
# Runs the chat example (examples/php/chat), or the notify example with EXAMPLE=notify: builds
# wsbridge, starts PHP's built-in server with the app, starts wsbridge in front of it (WebSockets
# at /ws, Server-Sent Events at /events), prints the URL, and waits until Ctrl-C.
#
# Environment (all optional):
#   EXAMPLE=chat    chat or notify (examples/php/<EXAMPLE>)
#   PORT=8080       public port of wsbridge (open this one in the browser)
#   PHP_PORT=8000   PHP's built-in server (wsbridge's upstream and webhook target)
#   API_PORT=8081   wsbridge's internal push API
#   BIN=...         where to build the wsbridge binary (default: a temporary directory)
#   DEMO_CHECK=1    start, run a quick self-check, stop, and exit 0/1 (for tests)
#   WEBHOOKS=fastcgi  send the webhooks to php-fpm directly over FastCGI (a pool of its own on
#                   a unix socket, docs/php.md) instead of to php -S; php -S still serves pages
#   WSBRIDGE_API_TOKEN=...  protects the internal API; both wsbridge and PHP inherit it
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$ROOT"

EXAMPLE="${EXAMPLE:-chat}"
PORT="${PORT:-8080}"
PHP_PORT="${PHP_PORT:-8000}"
API_PORT="${API_PORT:-8081}"

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'run-demo: %s\n' "$*" >&2; exit 1; }
case "$EXAMPLE" in chat|notify) ;; *) die "EXAMPLE must be chat or notify, not $EXAMPLE" ;; esac

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# --- prerequisites -------------------------------------------------------------------------
if ! command -v php >/dev/null 2>&1; then
    log "php not found: installing php-cli and php-curl"
    as_root apt-get update
    as_root apt-get install -y php-cli php-curl
elif ! php -r 'exit(extension_loaded("curl") ? 0 : 1);'; then
    log "the PHP curl extension is missing: installing php-curl"
    as_root apt-get update
    as_root apt-get install -y php-curl
fi
WEBHOOKS="${WEBHOOKS:-http}"
case "$WEBHOOKS" in http|fastcgi) ;; *) die "WEBHOOKS must be http or fastcgi, got $WEBHOOKS" ;; esac
FPM=""
if [ "$WEBHOOKS" = fastcgi ]; then
    FPM="$(ls /usr/sbin/php-fpm* 2>/dev/null | head -n1 || true)"
    if [ -z "$FPM" ]; then
        log "php-fpm not found: installing php-fpm"
        as_root apt-get update
        as_root apt-get install -y php-fpm
        FPM="$(ls /usr/sbin/php-fpm* | head -n1)"
    fi
fi
command -v go >/dev/null 2>&1 || die "go is required to build wsbridge"
command -v curl >/dev/null 2>&1 || die "curl is required"

TMP_DIR="$(mktemp -d)"
BIN="${BIN:-$TMP_DIR/wsbridge}"

PHP_PID=""
WS_PID=""
FPM_PID=""
cleanup() {
    # Run once, undisturbed: a second Ctrl-C (or a TERM sent to the whole group) must not
    # abort it half-way and leave a server behind.
    trap '' INT TERM
    trap - EXIT
    if [ -n "$WS_PID" ]; then
        kill "$WS_PID" 2>/dev/null || true
        wait "$WS_PID" 2>/dev/null || true
    fi
    if [ -n "$FPM_PID" ]; then
        kill "$FPM_PID" 2>/dev/null || true
        wait "$FPM_PID" 2>/dev/null || true
    fi
    if [ -n "$PHP_PID" ]; then
        # php -S runs in its own process group (see below): end the master and its workers.
        kill -- "-$PHP_PID" 2>/dev/null || kill "$PHP_PID" 2>/dev/null || true
        wait "$PHP_PID" 2>/dev/null || true
    fi
    rm -rf "$TMP_DIR"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- build -----------------------------------------------------------------------------------
log "building wsbridge into $BIN"
CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o "$BIN" ./cmd/wsbridge

# A fresh secret per run: PHP refuses any webhook not signed with it.
if command -v openssl >/dev/null 2>&1; then
    SECRET="$(openssl rand -hex 16)"
else
    SECRET="$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
fi

# --- start -----------------------------------------------------------------------------------
# variables_order=EGPCS makes the environment visible to the scripts ($_ENV and getenv()).
# With PHP_CLI_SERVER_WORKERS, php -S forks workers that outlive a killed master, so it gets a
# process group of its own (setsid; $! is then both its pid and its group id) to end them all.
SETSID=()
command -v setsid >/dev/null 2>&1 && SETSID=(setsid)
log "starting PHP on 127.0.0.1:$PHP_PORT"
WSBRIDGE_WEBHOOK_SECRET="$SECRET" \
WSBRIDGE_API="http://127.0.0.1:$API_PORT" \
CHAT_DATA_DIR="$TMP_DIR/data" \
PHP_CLI_SERVER_WORKERS=4 \
    "${SETSID[@]}" php -d variables_order=EGPCS -d session.save_path="$TMP_DIR" \
    -S "127.0.0.1:$PHP_PORT" -t "examples/php/$EXAMPLE/public" &
PHP_PID=$!

WEBHOOK_URL="http://127.0.0.1:$PHP_PORT/webhook.php"
if [ "$WEBHOOKS" = fastcgi ]; then
    # A pool of its own for the webhooks: as many children as wsbridge's webhook slots (each
    # slot keeps a FastCGI connection, and a child serves one connection at a time), the app's
    # settings as env[...] (no web server adds them as params), sessions where php -S keeps them.
    FPM_SOCK="$TMP_DIR/fpm.sock"
    FPM_ARGS=(-F -y "$TMP_DIR/php-fpm.conf")
    FPM_USER=""
    if [ "$(id -u)" -eq 0 ]; then
        FPM_USER="user = root"$'\n'"group = root"
        FPM_ARGS+=(-R)
    fi
    cat >"$TMP_DIR/php-fpm.conf" <<CONF
[global]
pid = $TMP_DIR/fpm.pid
error_log = $TMP_DIR/fpm.log
daemonize = no

[wsbridge-hooks]
$FPM_USER
listen = $FPM_SOCK
listen.mode = 0600
pm = static
pm.max_children = 8
pm.max_requests = 500
php_admin_value[session.save_path] = $TMP_DIR
env[WSBRIDGE_WEBHOOK_SECRET] = $SECRET
env[WSBRIDGE_API] = http://127.0.0.1:$API_PORT
env[CHAT_DATA_DIR] = $TMP_DIR/data
CONF
    log "starting php-fpm for the webhooks on $FPM_SOCK"
    "$FPM" "${FPM_ARGS[@]}" &
    FPM_PID=$!
    for _ in $(seq 1 50); do
        [ -S "$FPM_SOCK" ] && break
        kill -0 "$FPM_PID" 2>/dev/null || die "php-fpm exited during startup (see $TMP_DIR/fpm.log)"
        sleep 0.2
    done
    [ -S "$FPM_SOCK" ] || die "php-fpm did not open $FPM_SOCK within 10 s"
    WEBHOOK_URL="fcgi+unix://$FPM_SOCK?script=$ROOT/examples/php/$EXAMPLE/public/webhook.php"
fi

log "starting wsbridge on 127.0.0.1:$PORT (internal API on 127.0.0.1:$API_PORT, webhooks to $WEBHOOK_URL)"
WSBRIDGE_LISTEN="127.0.0.1:$PORT" \
WSBRIDGE_INTERNAL_LISTEN="127.0.0.1:$API_PORT" \
WSBRIDGE_UPSTREAM="http://127.0.0.1:$PHP_PORT" \
WSBRIDGE_SSE_PATH=/events \
WSBRIDGE_HISTORY_SIZE=100 \
WSBRIDGE_WEBHOOK_URL="$WEBHOOK_URL" \
WSBRIDGE_WEBHOOK_CONCURRENCY=8 \
WSBRIDGE_WEBHOOK_SECRET="$SECRET" \
    "$BIN" &
WS_PID=$!

# Wait (about 10 s at most) until the page answers through wsbridge.
ready=0
for _ in $(seq 1 50); do
    kill -0 "$PHP_PID" 2>/dev/null || die "PHP exited during startup (is port $PHP_PORT free?)"
    kill -0 "$WS_PID" 2>/dev/null || die "wsbridge exited during startup (are ports $PORT and $API_PORT free?)"
    [ -z "$FPM_PID" ] || kill -0 "$FPM_PID" 2>/dev/null || die "php-fpm exited (see $TMP_DIR/fpm.log)"
    if curl -fsS -o /dev/null --max-time 1 "http://127.0.0.1:$PORT/" 2>/dev/null; then
        ready=1
        break
    fi
    sleep 0.2
done
[ "$ready" -eq 1 ] || die "http://127.0.0.1:$PORT/ did not answer within 10 s"

# --- self-check (DEMO_CHECK=1) ---------------------------------------------------------------
if [ "${DEMO_CHECK:-}" = "1" ]; then
    ok=1
    check() { # check <description> <command...>
        local what="$1"; shift
        if "$@"; then log "ok:   $what"; else log "FAIL: $what"; ok=0; fi
    }
    page_served() {
        local marker='action="/login.php"'
        [ "$EXAMPLE" = notify ] && marker='name="login"'
        curl -fsS --max-time 5 "http://127.0.0.1:$PORT/" | grep -q "$marker"
    }
    unsigned_webhook_refused() {
        # Proves the secret reached PHP: an unsigned webhook sent to PHP itself gets a 401.
        [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 -X POST \
            -H 'Content-Type: application/json' -H 'WsBridge-Event: open' \
            --data '{"type":"open"}' "http://127.0.0.1:$PHP_PORT/webhook.php")" = "401" ]
    }
    webhook_path_not_proxied() {
        # The public port never forwards a request to the webhook's path: a forged event
        # cannot reach PHP through wsbridge, signed or not.
        [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 -X POST \
            -H 'Content-Type: application/json' -H 'WsBridge-Event: open' \
            --data '{"type":"open"}' "http://127.0.0.1:$PORT/webhook.php")" = "403" ]
    }
    login_works() {
        # A session cookie through the proxy, then the app's page for that user.
        local jar="$TMP_DIR/cookies"
        if [ "$EXAMPLE" = notify ]; then
            curl -fsS -o /dev/null --max-time 5 -c "$jar" -d 'login=bob' "http://127.0.0.1:$PORT/" &&
                curl -fsS --max-time 5 -b "$jar" "http://127.0.0.1:$PORT/" | grep -q 'id="me">bob<'
        else
            curl -fsS -o /dev/null --max-time 5 -c "$jar" -d 'name=bob&password=demo' "http://127.0.0.1:$PORT/login.php" &&
                curl -fsS --max-time 5 -b "$jar" "http://127.0.0.1:$PORT/" | grep -q 'data-user="bob"'
        fi
    }
    anonymous_stream_refused() {
        # The same open webhook refuses an event stream without a session, status as is.
        [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 -H 'Accept: text/event-stream' \
            "http://127.0.0.1:$PORT/events")" = "401" ]
    }
    stream_opens() {
        # With the session of login_works, /events is an event stream; curl stops it after 2 s.
        local headers="$TMP_DIR/sse-headers"
        curl -s -N -o /dev/null -D "$headers" --max-time 2 -b "$TMP_DIR/cookies" \
            -H 'Accept: text/event-stream' "http://127.0.0.1:$PORT/events" || true
        grep -qi '^HTTP/1.1 200' "$headers" && grep -qi '^content-type: text/event-stream' "$headers"
    }
    anonymous_socket_refused() {
        # The open webhook ran in PHP and refused a handshake without a session: 401.
        [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 -H 'Connection: Upgrade' -H 'Upgrade: websocket' \
            -H 'Sec-WebSocket-Version: 13' -H 'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==' \
            "http://127.0.0.1:$PORT/ws")" = "401" ]
    }
    check "login page served through wsbridge" page_served
    check "unsigned webhook refused by PHP with 401" unsigned_webhook_refused
    forged_webhook_refused() {
        # With FastCGI the bridge does not know where the upstream serves the script, so the
        # path is proxied like any other: the signature is what refuses a forged event.
        [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 -X POST \
            -H 'Content-Type: application/json' -H 'WsBridge-Event: open' \
            --data '{"type":"open"}' "http://127.0.0.1:$PORT/webhook.php")" = "401" ]
    }
    if [ "$WEBHOOKS" = fastcgi ]; then
        check "forged webhook through wsbridge refused by PHP (401)" forged_webhook_refused
    else
        check "webhook path not proxied by wsbridge (403)" webhook_path_not_proxied
    fi
    check "login sets a session the chat page sees" login_works
    check "socket without a session refused by PHP with 401" anonymous_socket_refused
    check "event stream without a session refused by PHP with 401" anonymous_stream_refused
    check "event stream with the session opens (200 text/event-stream)" stream_opens
    [ "$ok" -eq 1 ] || die "self-check failed"
    log "self-check passed"
    exit 0
fi

if [ "$EXAMPLE" = notify ]; then
cat <<EOF

  Open http://127.0.0.1:$PORT/ (WebSocket) or http://127.0.0.1:$PORT/?transport=sse
  (Server-Sent Events), log in with any name, and send yourself a notification.

  Press Ctrl-C to stop.

EOF
else
cat <<EOF

  Open http://127.0.0.1:$PORT/ in two browsers (or a private window)
  and log in as ann (admin), bob or cat; the password is "demo".

  Press Ctrl-C to stop.

EOF
fi

# Run until Ctrl-C or until either server exits.
set +e
wait -n "$PHP_PID" "$WS_PID" ${FPM_PID:+"$FPM_PID"}
status=$?
set -e
die "a server exited (status $status); stopping"
