package bridge

import (
	"errors"
	"flag"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/wsbridge/wsbridge/bridge/testkit"
)

var update = flag.Bool("update", false, "rewrite docs/configuration.md from the Config struct instead of comparing")

// configDocPath is the committed configuration manual, relative to this package's directory.
const configDocPath = "../docs/configuration.md"

const testWebhookURL = "http://php.test/wsbridge/hook"

// withWebhook returns environ with a valid WSBRIDGE_WEBHOOK_URL in front.
func withWebhook(environ ...string) []string {
	return append([]string{"WSBRIDGE_WEBHOOK_URL=" + testWebhookURL}, environ...)
}

// problemsByVar groups a ConfigError's lines by the variable each names (the text before the
// first ": "), failing when a line does not start with a WSBRIDGE_ variable.
func problemsByVar(t *testing.T, err error) map[string][]string {
	t.Helper()
	var ce *ConfigError
	if !errors.As(err, &ce) {
		t.Fatalf("want a *ConfigError, got %T: %v", err, err)
	}
	if len(ce.Problems) == 0 {
		t.Fatal("ConfigError with no problems")
	}
	byVar := map[string][]string{}
	for _, p := range ce.Problems {
		name, msg, ok := strings.Cut(p, ": ")
		if !ok || !strings.HasPrefix(name, EnvPrefix) {
			t.Errorf("problem %q does not start with the variable's name", p)
			continue
		}
		byVar[name] = append(byVar[name], msg)
	}
	return byVar
}

// checkProblems asserts that err reports exactly the variables in want, each on exactly one
// line that contains want's substring.
func checkProblems(t *testing.T, err error, want map[string]string) {
	t.Helper()
	if err == nil {
		t.Fatalf("want errors for %v, got none", slices.Sorted(maps.Keys(want)))
	}
	got := problemsByVar(t, err)
	for name, sub := range want {
		lines := got[name]
		switch {
		case len(lines) == 0:
			t.Errorf("%s not reported; error was:\n%v", name, err)
		case len(lines) > 1:
			t.Errorf("%s reported %d times, want once: %q", name, len(lines), lines)
		case !strings.Contains(lines[0], sub):
			t.Errorf("%s: message %q does not contain %q", name, lines[0], sub)
		}
	}
	for name, lines := range got {
		if _, ok := want[name]; !ok {
			t.Errorf("unexpected problem for %s: %q", name, lines)
		}
	}
}

// loadCase is one LoadConfig case: want maps each variable that must be reported to a
// substring of its one problem line (nil: no error); check inspects the result.
type loadCase struct {
	name    string
	environ []string
	want    map[string]string
	check   func(t *testing.T, c Config)
}

func TestLoadConfig(t *testing.T) {
	t.Parallel()
	ca := testkit.NewCA(t)
	var pairA, pairB struct{ cert, key string }
	pairA.cert, pairA.key = ca.WritePair(t, "a.test", 1)
	pairB.cert, pairB.key = ca.WritePair(t, "b.test", 2)
	tests := []loadCase{
		{
			name:    "defaults",
			environ: withWebhook(),
			check: func(t *testing.T, c Config) {
				if c.Listen != ":8080" {
					t.Errorf("Listen = %q, want :8080", c.Listen)
				}
				if c.InternalListen != "127.0.0.1:8081" {
					t.Errorf("InternalListen = %q, want 127.0.0.1:8081", c.InternalListen)
				}
				if !c.InternalIsLocal() {
					t.Error("default INTERNAL_LISTEN is not local")
				}
				if !slices.Equal(c.WSPaths, []string{"/ws"}) {
					t.Errorf("WSPaths = %q, want [/ws]", c.WSPaths)
				}
				if len(c.AllowedOrigins) != 0 {
					t.Errorf("AllowedOrigins = %q, want none", c.AllowedOrigins)
				}
				if c.Upstream != nil {
					t.Errorf("Upstream = %v, want nil", c.Upstream)
				}
				if c.WebhookURL == nil || c.WebhookURL.String() != testWebhookURL {
					t.Errorf("WebhookURL = %v, want %s", c.WebhookURL, testWebhookURL)
				}
				if c.WebhookOpenURL != nil || c.WebhookMessageURL != nil || c.WebhookCloseURL != nil {
					t.Error("per-event webhook URLs set without being configured")
				}
				if c.APIToken != "" || c.WebhookSecret != "" {
					t.Errorf("secrets set by default: token %q, secret %q", c.APIToken, c.WebhookSecret)
				}
				if c.WebhookConcurrency != 8 {
					t.Errorf("WebhookConcurrency = %d, want 8", c.WebhookConcurrency)
				}
				if c.WebhookTimeout != 10*time.Second {
					t.Errorf("WebhookTimeout = %s, want 10s", c.WebhookTimeout)
				}
				if c.WebhookMaxReply != 1<<20 {
					t.Errorf("WebhookMaxReply = %d, want 1048576", c.WebhookMaxReply)
				}
				wantFwd := []string{"Cookie", "Authorization", "User-Agent", "Origin", "Accept-Language", "X-Forwarded-For"}
				if !slices.Equal(c.ForwardHeaders, wantFwd) {
					t.Errorf("ForwardHeaders = %q, want %q", c.ForwardHeaders, wantFwd)
				}
				if c.MaxMessageSize != 65536 || c.MaxMetaSize != 8192 || c.MaxNameLength != 200 || c.SendQueue != 2048 || c.SendQueueBytes != 4<<20 {
					t.Errorf("sizes = %d/%d/%d/%d, want 65536/8192/200/2048 (and 4 MiB)", c.MaxMessageSize, c.MaxMetaSize, c.MaxNameLength, c.SendQueue)
				}
				if c.WriteTimeout != 10*time.Second || c.PingInterval != 25*time.Second || c.PingTimeout != 10*time.Second {
					t.Errorf("write/ping = %s/%s/%s, want 10s/25s/10s", c.WriteTimeout, c.PingInterval, c.PingTimeout)
				}
				if c.MaxPushBody != 1<<20 || c.MaxBatch != 1000 || c.MaxListResult != 10000 {
					t.Errorf("API limits = %d/%d/%d, want 1048576/1000/10000", c.MaxPushBody, c.MaxBatch, c.MaxListResult)
				}
				if c.ShutdownTimeout != 30*time.Second {
					t.Errorf("ShutdownTimeout = %s, want 30s", c.ShutdownTimeout)
				}
				if c.TLSCertFile != "" || c.TLSKeyFile != "" {
					t.Errorf("TLS files %q, %q by default; want none (plain HTTP)", c.TLSCertFile, c.TLSKeyFile)
				}
				if c.NodeID != "" || c.LogLevel != "info" {
					t.Errorf("NodeID %q, LogLevel %q; want empty, info", c.NodeID, c.LogLevel)
				}
			},
		},
		{
			name: "overrides",
			environ: withWebhook(
				"WSBRIDGE_LISTEN=0.0.0.0:9000",
				"WSBRIDGE_WS_PATH=/ws,/chat",
				"WSBRIDGE_ALLOWED_ORIGINS=example.com,*.example.com",
				"WSBRIDGE_UPSTREAM=https://app.internal:8443/base",
				"WSBRIDGE_INTERNAL_LISTEN=10.0.0.5:8081",
				"WSBRIDGE_API_TOKEN=  tok  ",
				"WSBRIDGE_WEBHOOK_CLOSE_URL=http://php.test/close",
				"WSBRIDGE_WEBHOOK_TIMEOUT=1500ms",
				"WSBRIDGE_FORWARD_HEADERS=Cookie,X-Request-Id",
				"WSBRIDGE_MAX_BATCH=5",
				"WSBRIDGE_NODE_ID=node-1_a",
				"WSBRIDGE_LOG_LEVEL=DEBUG",
			),
			check: func(t *testing.T, c Config) {
				if c.Listen != "0.0.0.0:9000" {
					t.Errorf("Listen = %q", c.Listen)
				}
				if !slices.Equal(c.WSPaths, []string{"/ws", "/chat"}) {
					t.Errorf("WSPaths = %q", c.WSPaths)
				}
				if !slices.Equal(c.AllowedOrigins, []string{"example.com", "*.example.com"}) {
					t.Errorf("AllowedOrigins = %q", c.AllowedOrigins)
				}
				if c.Upstream == nil || c.Upstream.Host != "app.internal:8443" || c.Upstream.Path != "/base" {
					t.Errorf("Upstream = %v", c.Upstream)
				}
				if c.APIToken != "tok" {
					t.Errorf("APIToken = %q, want the trimmed tok", c.APIToken)
				}
				if c.InternalIsLocal() {
					t.Error("10.0.0.5 counted as local")
				}
				if got := c.webhookURL(EventClose).String(); got != "http://php.test/close" {
					t.Errorf("close webhook URL = %s", got)
				}
				if got := c.webhookURL(EventOpen).String(); got != testWebhookURL {
					t.Errorf("open webhook URL = %s, want the WEBHOOK_URL fallback", got)
				}
				if c.WebhookTimeout != 1500*time.Millisecond {
					t.Errorf("WebhookTimeout = %s", c.WebhookTimeout)
				}
				if !slices.Equal(c.ForwardHeaders, []string{"Cookie", "X-Request-Id"}) {
					t.Errorf("ForwardHeaders = %q", c.ForwardHeaders)
				}
				if c.MaxBatch != 5 || c.NodeID != "node-1_a" || c.LogLevel != "DEBUG" {
					t.Errorf("MaxBatch %d, NodeID %q, LogLevel %q", c.MaxBatch, c.NodeID, c.LogLevel)
				}
			},
		},
		{
			name:    "unix socket needs no token",
			environ: withWebhook("WSBRIDGE_INTERNAL_LISTEN=unix:/run/wsbridge/api.sock"),
			check: func(t *testing.T, c Config) {
				if c.InternalListen != "unix:/run/wsbridge/api.sock" || c.APIToken != "" {
					t.Errorf("InternalListen %q, APIToken %q", c.InternalListen, c.APIToken)
				}
			},
		},

		// validate(): one case per check.
		// The sections are struct fields without an env tag, so caarlos0/env reads the bare
		// prefix as their key and would fail for want of a struct parser; it names no variable.
		{name: "bare prefix is no variable", environ: withWebhook("WSBRIDGE_=x")},
		{name: "listen without port", environ: withWebhook("WSBRIDGE_LISTEN=8080"),
			want: map[string]string{"WSBRIDGE_LISTEN": `want host:port, got "8080"`}},
		{name: "ws path without slash", environ: withWebhook("WSBRIDGE_WS_PATH=/ws,chat"),
			want: map[string]string{"WSBRIDGE_WS_PATH": `"chat" must start with /`}},
		{name: "ws path with a wildcard", environ: withWebhook("WSBRIDGE_WS_PATH=/ws/{id}"),
			want: map[string]string{"WSBRIDGE_WS_PATH": `"/ws/{id}": use a plain path`}},
		{name: "bad origin pattern", environ: withWebhook("WSBRIDGE_ALLOWED_ORIGINS=example.com,[a-"),
			want: map[string]string{"WSBRIDGE_ALLOWED_ORIGINS": `bad pattern "[a-"`}},
		{name: "ftp upstream", environ: withWebhook("WSBRIDGE_UPSTREAM=ftp://files.test/"),
			want: map[string]string{"WSBRIDGE_UPSTREAM": "want an absolute http(s) URL"}},
		{name: "upstream without host", environ: withWebhook("WSBRIDGE_UPSTREAM=http:///x"),
			want: map[string]string{"WSBRIDGE_UPSTREAM": "want an absolute http(s) URL"}},
		{name: "ftp webhook url", environ: []string{"WSBRIDGE_WEBHOOK_URL=ftp://php.test/hook"},
			want: map[string]string{"WSBRIDGE_WEBHOOK_URL": `want an absolute http(s) URL, got "ftp://php.test/hook"`}},
		{name: "relative open url", environ: withWebhook("WSBRIDGE_WEBHOOK_OPEN_URL=/open"),
			want: map[string]string{"WSBRIDGE_WEBHOOK_OPEN_URL": "want an absolute http(s) URL"}},
		{name: "relative message url", environ: withWebhook("WSBRIDGE_WEBHOOK_MESSAGE_URL=php.test/message"),
			want: map[string]string{"WSBRIDGE_WEBHOOK_MESSAGE_URL": "want an absolute http(s) URL"}},
		{name: "ws close url", environ: withWebhook("WSBRIDGE_WEBHOOK_CLOSE_URL=ws://php.test/close"),
			want: map[string]string{"WSBRIDGE_WEBHOOK_CLOSE_URL": "want an absolute http(s) URL"}},
		{name: "webhook url missing", environ: nil,
			want: map[string]string{"WSBRIDGE_WEBHOOK_URL": "required, not set"}},
		{name: "webhook url empty", environ: []string{"WSBRIDGE_WEBHOOK_URL="},
			want: map[string]string{"WSBRIDGE_WEBHOOK_URL": "must not be empty"}},
		{name: "internal equals public", environ: withWebhook("WSBRIDGE_LISTEN=127.0.0.1:9000", "WSBRIDGE_INTERNAL_LISTEN=127.0.0.1:9000"),
			want: map[string]string{"WSBRIDGE_INTERNAL_LISTEN": "must not be the public address"}},
		{name: "unix without path", environ: withWebhook("WSBRIDGE_INTERNAL_LISTEN=unix:"),
			want: map[string]string{"WSBRIDGE_INTERNAL_LISTEN": "unix: needs a socket path"}},
		{name: "internal without port", environ: withWebhook("WSBRIDGE_INTERNAL_LISTEN=localhost", "WSBRIDGE_API_TOKEN=t"),
			want: map[string]string{"WSBRIDGE_INTERNAL_LISTEN": `want host:port or unix:/path, got "localhost"`}},
		{name: "public internal without token", environ: withWebhook("WSBRIDGE_INTERNAL_LISTEN=0.0.0.0:8081"),
			want: map[string]string{"WSBRIDGE_API_TOKEN": `required because INTERNAL_LISTEN "0.0.0.0:8081"`}},
		{name: "all-interfaces internal without token", environ: withWebhook("WSBRIDGE_INTERNAL_LISTEN=:8081"),
			want: map[string]string{"WSBRIDGE_API_TOKEN": "required because INTERNAL_LISTEN"}},
		{name: "token and token file", environ: withWebhook("WSBRIDGE_API_TOKEN=a", "WSBRIDGE_API_TOKEN_FILE="+writeSecret(t, "b\n")),
			want: map[string]string{"WSBRIDGE_API_TOKEN": "not both"}},
		{name: "secret and secret file", environ: withWebhook("WSBRIDGE_WEBHOOK_SECRET=a", "WSBRIDGE_WEBHOOK_SECRET_FILE="+writeSecret(t, "b\n")),
			want: map[string]string{"WSBRIDGE_WEBHOOK_SECRET": "not both"}},
		{name: "wsbridge header forwarded", environ: withWebhook("WSBRIDGE_FORWARD_HEADERS=Cookie,wsbridge-signature"),
			want: map[string]string{"WSBRIDGE_FORWARD_HEADERS": `"wsbridge-signature": WsBridge-* headers`}},
		{name: "node id with dot", environ: withWebhook("WSBRIDGE_NODE_ID=a.b"),
			want: map[string]string{"WSBRIDGE_NODE_ID": `"a.b": use 1-32 letters`}},
		{name: "node id too long", environ: withWebhook("WSBRIDGE_NODE_ID=" + strings.Repeat("n", 33)),
			want: map[string]string{"WSBRIDGE_NODE_ID": "use 1-32 letters"}},
		{name: "unknown broker", environ: withWebhook("WSBRIDGE_BROKER=kafka"),
			want: map[string]string{"WSBRIDGE_BROKER": `"kafka": use memory, redis or nats`}},
		{name: "redis broker without URL", environ: withWebhook("WSBRIDGE_BROKER=redis"),
			want: map[string]string{"WSBRIDGE_REDIS_URL": "must be set with BROKER=redis"}},
		{name: "redis URL of another scheme, password hidden", environ: withWebhook("WSBRIDGE_BROKER=redis", "WSBRIDGE_REDIS_URL=http://u:s3cret@h:6379"),
			want: map[string]string{"WSBRIDGE_REDIS_URL": `"http://u:xxxxx@h:6379": use redis://`}},
		{name: "nats broker without URL", environ: withWebhook("WSBRIDGE_BROKER=nats"),
			want: map[string]string{"WSBRIDGE_NATS_URL": "must be set with BROKER=nats"}},
		{name: "cluster prefix with a colon", environ: withWebhook("WSBRIDGE_CLUSTER_PREFIX=a:b"),
			want: map[string]string{"WSBRIDGE_CLUSTER_PREFIX": `"a:b": use 1-64 letters`}},
		{name: "node timeout zero", environ: withWebhook("WSBRIDGE_NODE_TIMEOUT=0s"),
			want: map[string]string{"WSBRIDGE_NODE_TIMEOUT": "must be a positive duration"}},
		{name: "log level", environ: withWebhook("WSBRIDGE_LOG_LEVEL=verbose"),
			want: map[string]string{"WSBRIDGE_LOG_LEVEL": `"verbose": use debug, info, warn or error`}},
		{name: "open share zero", environ: withWebhook("WSBRIDGE_WEBHOOK_OPEN_SHARE=0"),
			want: map[string]string{"WSBRIDGE_WEBHOOK_OPEN_SHARE": "must be greater than 0 and at most 1, got 0"}},
		{name: "open share above one", environ: withWebhook("WSBRIDGE_WEBHOOK_OPEN_SHARE=1.5"),
			want: map[string]string{"WSBRIDGE_WEBHOOK_OPEN_SHARE": "must be greater than 0 and at most 1, got 1.5"}},
		{name: "open share NaN", environ: withWebhook("WSBRIDGE_WEBHOOK_OPEN_SHARE=NaN"),
			want: map[string]string{"WSBRIDGE_WEBHOOK_OPEN_SHARE": "must be greater than 0 and at most 1, got NaN"}},
		{name: "open share one", environ: withWebhook("WSBRIDGE_WEBHOOK_OPEN_SHARE=1"),
			check: func(t *testing.T, c Config) {
				if n := openSlots(c.WebhookConcurrency, c.WebhookOpenShare); n != c.WebhookConcurrency {
					t.Errorf("WEBHOOK_OPEN_SHARE=1 lets opens hold %d of %d slots, want all", n, c.WebhookConcurrency)
				}
			}},
		{name: "log repeat limit negative", environ: withWebhook("WSBRIDGE_LOG_REPEAT_LIMIT=-1"),
			want: map[string]string{"WSBRIDGE_LOG_REPEAT_LIMIT": "must be 0 or more, got -1"}},

		// TLS: both files or neither, each readable, and together a valid pair.
		{name: "tls valid pair", environ: withWebhook("WSBRIDGE_TLS_CERT_FILE="+pairA.cert, "WSBRIDGE_TLS_KEY_FILE="+pairA.key),
			check: func(t *testing.T, c Config) {
				if c.TLSCertFile != pairA.cert || c.TLSKeyFile != pairA.key {
					t.Errorf("TLS files = %q, %q", c.TLSCertFile, c.TLSKeyFile)
				}
			}},
		{name: "tls cert without key", environ: withWebhook("WSBRIDGE_TLS_CERT_FILE=" + pairA.cert),
			want: map[string]string{"WSBRIDGE_TLS_KEY_FILE": "required because WSBRIDGE_TLS_CERT_FILE is set (set both or neither)"}},
		{name: "tls key without cert", environ: withWebhook("WSBRIDGE_TLS_KEY_FILE=" + pairA.key),
			want: map[string]string{"WSBRIDGE_TLS_CERT_FILE": "required because WSBRIDGE_TLS_KEY_FILE is set (set both or neither)"}},
		{name: "tls cert file missing", environ: withWebhook("WSBRIDGE_TLS_CERT_FILE=/nonexistent/wsbridge/cert.pem", "WSBRIDGE_TLS_KEY_FILE="+pairA.key),
			want: map[string]string{"WSBRIDGE_TLS_CERT_FILE": `cannot read "/nonexistent/wsbridge/cert.pem"`}},
		{name: "tls key file missing", environ: withWebhook("WSBRIDGE_TLS_CERT_FILE="+pairA.cert, "WSBRIDGE_TLS_KEY_FILE=/nonexistent/wsbridge/key.pem"),
			want: map[string]string{"WSBRIDGE_TLS_KEY_FILE": `cannot read "/nonexistent/wsbridge/key.pem"`}},
		{name: "tls both files missing", environ: withWebhook("WSBRIDGE_TLS_CERT_FILE=/nonexistent/c", "WSBRIDGE_TLS_KEY_FILE=/nonexistent/k"),
			want: map[string]string{"WSBRIDGE_TLS_CERT_FILE": `cannot read "/nonexistent/c"`, "WSBRIDGE_TLS_KEY_FILE": `cannot read "/nonexistent/k"`}},
		{name: "tls mismatched pair", environ: withWebhook("WSBRIDGE_TLS_CERT_FILE="+pairA.cert, "WSBRIDGE_TLS_KEY_FILE="+pairB.key),
			want: map[string]string{"WSBRIDGE_TLS_CERT_FILE": `and WSBRIDGE_TLS_KEY_FILE "` + pairB.key + `" are not a valid pair: tls: private key does not match public key`}},
		{name: "tls cert not pem", environ: withWebhook("WSBRIDGE_TLS_CERT_FILE="+writeSecret(t, "not a certificate\n"), "WSBRIDGE_TLS_KEY_FILE="+pairA.key),
			want: map[string]string{"WSBRIDGE_TLS_CERT_FILE": "failed to find any PEM data in certificate input"}},
		{name: "tls key is the certificate", environ: withWebhook("WSBRIDGE_TLS_CERT_FILE="+pairA.cert, "WSBRIDGE_TLS_KEY_FILE="+pairA.cert),
			want: map[string]string{"WSBRIDGE_TLS_CERT_FILE": "are not a valid pair"}},
		{name: "tls cert is a directory", environ: withWebhook("WSBRIDGE_TLS_CERT_FILE="+t.TempDir(), "WSBRIDGE_TLS_KEY_FILE="+pairA.key),
			want: map[string]string{"WSBRIDGE_TLS_CERT_FILE": "is a directory"}},

		// Values that fail parsing are reported once, by the parser, not again by validate.
		{name: "unparsable duration", environ: withWebhook("WSBRIDGE_WEBHOOK_TIMEOUT=soon"),
			want: map[string]string{"WSBRIDGE_WEBHOOK_TIMEOUT": "cannot parse as time.Duration"}},
		{name: "unparsable int", environ: withWebhook("WSBRIDGE_MAX_BATCH=many"),
			want: map[string]string{"WSBRIDGE_MAX_BATCH": "cannot parse as int"}},
		{name: "unparsable int64", environ: withWebhook("WSBRIDGE_MAX_MESSAGE_SIZE=64k"),
			want: map[string]string{"WSBRIDGE_MAX_MESSAGE_SIZE": "cannot parse as int64"}},
		{name: "unparsable webhook url", environ: []string{"WSBRIDGE_WEBHOOK_URL=://php"},
			want: map[string]string{"WSBRIDGE_WEBHOOK_URL": "cannot parse"}},
		{name: "unreadable token file", environ: withWebhook("WSBRIDGE_API_TOKEN_FILE=/nonexistent/wsbridge/token"),
			want: map[string]string{"WSBRIDGE_API_TOKEN_FILE": `cannot read file "/nonexistent/wsbridge/token"`}},
		{name: "unreadable secret file", environ: withWebhook("WSBRIDGE_WEBHOOK_SECRET_FILE=/nonexistent/wsbridge/secret"),
			want: map[string]string{"WSBRIDGE_WEBHOOK_SECRET_FILE": `cannot read file "/nonexistent/wsbridge/secret"`}},

		{
			name: "everything at once",
			environ: []string{
				"WSBRIDGE_WEBHOOK_TIMEOUT=abc",
				"WSBRIDGE_MAX_BATCH=x",
				"WSBRIDGE_UPSTREAM=ftp://files.test/",
				"WSBRIDGE_LISTEN=:9000",
				"WSBRIDGE_INTERNAL_LISTEN=:9000",
				"WSBRIDGE_WEBHOOK_OPEN_URL=0.0.0.0:9",
				"WSBRIDGE_FORWARD_HEADERS=Cookie,WsBridge-Signature",
				"WSBRIDGE_NODE_ID=bad id",
				"WSBRIDGE_LOG_LEVEL=loud",
				"WSBRIDGE_SEND_QUEUE=0",
			},
			want: map[string]string{
				"WSBRIDGE_WEBHOOK_TIMEOUT":  "cannot parse",
				"WSBRIDGE_MAX_BATCH":        "cannot parse",
				"WSBRIDGE_WEBHOOK_URL":      "required, not set",
				"WSBRIDGE_UPSTREAM":         "want an absolute http(s) URL",
				"WSBRIDGE_INTERNAL_LISTEN":  "must not be the public address",
				"WSBRIDGE_WEBHOOK_OPEN_URL": "",
				"WSBRIDGE_FORWARD_HEADERS":  "WsBridge-* headers",
				"WSBRIDGE_NODE_ID":          `"bad id"`,
				"WSBRIDGE_LOG_LEVEL":        `"loud"`,
				"WSBRIDGE_SEND_QUEUE":       "must be greater than 0",
			},
		},
	}

	// Every size and count must be positive; every duration too.
	for _, key := range []string{"WEBHOOK_CONCURRENCY", "WEBHOOK_MAX_REPLY", "MAX_MESSAGE_SIZE", "MAX_META_SIZE",
		"MAX_NAME_LENGTH", "SEND_QUEUE", "MAX_PUSH_BODY", "MAX_BATCH", "MAX_LIST_RESULT"} {
		tests = append(tests, loadCase{name: key + " zero", environ: withWebhook(EnvPrefix + key + "=0"),
			want: map[string]string{EnvPrefix + key: "must be greater than 0, got 0"}})
	}
	for _, key := range []string{"WEBHOOK_TIMEOUT", "WRITE_TIMEOUT", "PING_INTERVAL", "PING_TIMEOUT", "SHUTDOWN_TIMEOUT",
		"WEBHOOK_QUEUE_WAIT", "LOG_REPEAT_INTERVAL"} {
		tests = append(tests, loadCase{name: key + " negative", environ: withWebhook(EnvPrefix + key + "=-1s"),
			want: map[string]string{EnvPrefix + key: "must be a positive duration such as 10s, got -1s"}})
	}

	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cfg, err := LoadConfig(tc.environ)
			if tc.want == nil {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
			} else {
				checkProblems(t, err, tc.want)
				if err != nil && !strings.HasPrefix(err.Error(), "invalid configuration:") {
					t.Errorf("error text %q lacks its heading", err)
				}
			}
			if tc.check != nil {
				tc.check(t, cfg)
			}
		})
	}
}

// TestConfigValidateNoWSPath covers the one check the environment cannot reach: an empty WS_PATH
// falls back to its default before validate runs.
func TestConfigValidateNoWSPath(t *testing.T) {
	t.Parallel()
	cfg, err := LoadConfig(withWebhook())
	if err != nil {
		t.Fatal(err)
	}
	cfg.WSPaths = nil
	ps := cfg.validate()
	if len(ps) != 1 || ps[0].key != "WS_PATH" || !strings.Contains(ps[0].msg, "at least one path") {
		t.Errorf("validate() = %+v, want one WS_PATH problem", ps)
	}
}

// writeSecret writes content to a fresh file and returns its path.
func writeSecret(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestConfigSecretFiles(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name        string
		environ     []string
		token, hmac string
	}{
		{
			name: "from files, trimmed",
			environ: withWebhook(
				"WSBRIDGE_API_TOKEN_FILE="+writeSecret(t, "s3cret-token\n"),
				"WSBRIDGE_WEBHOOK_SECRET_FILE="+writeSecret(t, "  hmac-key\r\n"),
			),
			token: "s3cret-token", hmac: "hmac-key",
		},
		{
			name:    "direct",
			environ: withWebhook("WSBRIDGE_API_TOKEN=direct-token", "WSBRIDGE_WEBHOOK_SECRET=direct-key"),
			token:   "direct-token", hmac: "direct-key",
		},
		{
			name:    "file token makes a public internal listener valid",
			environ: withWebhook("WSBRIDGE_INTERNAL_LISTEN=0.0.0.0:8081", "WSBRIDGE_API_TOKEN_FILE="+writeSecret(t, "t\n")),
			token:   "t",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cfg, err := LoadConfig(tc.environ)
			if err != nil {
				t.Fatal(err)
			}
			if cfg.APIToken != tc.token {
				t.Errorf("APIToken = %q, want %q", cfg.APIToken, tc.token)
			}
			if cfg.WebhookSecret != tc.hmac {
				t.Errorf("WebhookSecret = %q, want %q", cfg.WebhookSecret, tc.hmac)
			}
		})
	}
}

func TestConfigInternalIsLocal(t *testing.T) {
	t.Parallel()
	tests := []struct {
		addr  string
		local bool
	}{
		{"127.0.0.1:8081", true},
		{"127.0.0.2:8081", true},
		{"[::1]:8081", true},
		{"localhost:8081", true},
		{"unix:/run/wsbridge/api.sock", true},
		{"0.0.0.0:8081", false},
		{":8081", false},
		{"10.0.0.1:8081", false},
		{"[::]:8081", false},
		{"example.com:8081", false},
		{"127.0.0.1", false}, // not an address at all
	}
	for _, tc := range tests {
		t.Run(tc.addr, func(t *testing.T) {
			t.Parallel()
			c := Config{PushAPIConfig: PushAPIConfig{InternalListen: tc.addr}}
			if got := c.InternalIsLocal(); got != tc.local {
				t.Errorf("InternalIsLocal(%q) = %v, want %v", tc.addr, got, tc.local)
			}
		})
	}
}

func TestConfigDoc(t *testing.T) {
	want := configMarkdown()
	if *update {
		if err := os.WriteFile(configDocPath, []byte(want), 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("wrote %s", configDocPath)
	}
	got, err := os.ReadFile(configDocPath)
	if err != nil {
		t.Fatalf("%v; run `go test ./bridge -run TestConfigDoc -update` to generate it", err)
	}
	if string(got) != want {
		t.Errorf("%s is out of date with the Config struct; run `go test ./bridge -run TestConfigDoc -update` and commit the result", configDocPath)
	}
	for _, v := range ConfigVars() {
		if !strings.Contains(want, "`"+v.Name+"`") {
			t.Errorf("the manual does not list %s", v.Name)
		}
	}
	checkGrouped(t, "the manual", want, func(s configSection) string { return "\n## " + s.Title + "\n\n" + s.Purpose + "\n" },
		func(v ConfigVar) string { return "| `" + v.Name + "` |" })
}

// checkGrouped asserts that doc shows each section's heading once, in order, with each of its
// variables after it and before the next section's.
func checkGrouped(t *testing.T, what, doc string, heading func(configSection) string, row func(ConfigVar) string) {
	t.Helper()
	sections := configSections()
	if len(sections) < 2 {
		t.Fatalf("configSections() has %d sections", len(sections))
	}
	at := 0
	for i, s := range sections {
		h := heading(s)
		if strings.Count(doc, h) != 1 {
			t.Errorf("%s has %d headings %q, want 1", what, strings.Count(doc, h), h)
			continue
		}
		start := strings.Index(doc, h)
		if start < at {
			t.Errorf("%s: section %q is out of order", what, s.Title)
		}
		end := len(doc)
		if i+1 < len(sections) {
			if n := strings.Index(doc, heading(sections[i+1])); n > start {
				end = n
			}
		}
		for _, v := range s.Vars {
			if !strings.Contains(doc[start:end], row(v)) {
				t.Errorf("%s does not list %s under %q", what, v.Name, s.Title)
			}
		}
		at = start
	}
}

// configField is one variable found by configFields: its Go path and tags.
type configField struct {
	path, name, key, desc, def string
}

// configFields walks a Config-shaped struct type the way the manual must see it: every field of
// the top level is a section (an embedded struct with section and desc tags, no envPrefix, as
// the names are kept whole), and every field of a section is a variable with an env key and a
// desc. It returns the variables in order and a line for each field that breaks the rule.
func configFields(typ reflect.Type) ([]configField, []string) {
	var fields []configField
	var bad []string
	titles := map[string]bool{}
	keys := map[string]bool{}
	for i := range typ.NumField() {
		sec := typ.Field(i)
		title := strings.TrimSpace(sec.Tag.Get("section"))
		switch {
		case !sec.Anonymous || sec.Type.Kind() != reflect.Struct:
			bad = append(bad, fmt.Sprintf("field %s is not in a section (an embedded struct of Config)", sec.Name))
			continue
		case title == "":
			bad = append(bad, fmt.Sprintf("section %s has no section tag (its title)", sec.Name))
		case titles[title]:
			bad = append(bad, fmt.Sprintf("section title %q is used twice", title))
		}
		titles[title] = true
		if strings.TrimSpace(sec.Tag.Get("desc")) == "" {
			bad = append(bad, fmt.Sprintf("section %s has no desc (its purpose)", sec.Name))
		}
		if _, ok := sec.Tag.Lookup("envPrefix"); ok {
			bad = append(bad, fmt.Sprintf("section %s has an envPrefix, which would rename its variables", sec.Name))
		}
		for j := range sec.Type.NumField() {
			f := sec.Type.Field(j)
			path := sec.Name + "." + f.Name
			if f.Anonymous || (f.Type.Kind() == reflect.Struct && f.Type.PkgPath() == reflect.TypeFor[Config]().PkgPath()) {
				// caarlos0/env would read it as a nested group; the manual has one level.
				bad = append(bad, fmt.Sprintf("field %s is a nested struct; sections do not nest", path))
				continue
			}
			tag, ok := f.Tag.Lookup("env")
			key, _, _ := strings.Cut(tag, ",")
			if !ok || key == "" {
				bad = append(bad, fmt.Sprintf("field %s has no env tag", path))
				continue
			}
			if strings.TrimSpace(f.Tag.Get("desc")) == "" {
				bad = append(bad, fmt.Sprintf("field %s (%s) has no desc", path, key))
			}
			if keys[key] {
				bad = append(bad, fmt.Sprintf("%s%s is read by two fields", EnvPrefix, key))
			}
			keys[key] = true
			// Call sites read cfg.Field: a name in two sections would be ambiguous there.
			if top, ok := typ.FieldByName(f.Name); !ok || !slices.Equal(top.Index, []int{i, j}) {
				bad = append(bad, fmt.Sprintf("field %s is not promoted to Config.%s (another field has its name)", path, f.Name))
			}
			fields = append(fields, configField{path, f.Name, key, f.Tag.Get("desc"), f.Tag.Get("envDefault")})
		}
	}
	return fields, bad
}

// TestConfigFieldRules shows that configFields catches each way a variable could skip the
// manual or its section.
func TestConfigFieldRules(t *testing.T) {
	t.Parallel()
	type good struct {
		A string `env:"A" desc:"a"`
	}
	type other struct {
		A string `env:"B" desc:"b"`
	}
	type untagged struct {
		A string `desc:"a"`
	}
	type nodesc struct {
		A string `env:"A"`
	}
	type nested struct {
		good
	}
	tests := []struct {
		name string
		typ  reflect.Type
		want string // a substring of the one problem; "" for none
	}{
		{"well formed", reflect.TypeFor[struct {
			good `section:"G" desc:"g"`
		}](), ""},
		{"variable outside a section", reflect.TypeFor[struct {
			good `section:"G" desc:"g"`
			B    string `env:"B" desc:"b"`
		}](), "field B is not in a section"},
		{"named struct field", reflect.TypeFor[struct {
			G good `section:"G" desc:"g"`
		}](), "field G is not in a section"},
		{"section without title", reflect.TypeFor[struct {
			good `desc:"g"`
		}](), "has no section tag"},
		{"section without purpose", reflect.TypeFor[struct {
			good `section:"G"`
		}](), "section good has no desc"},
		{"section with envPrefix", reflect.TypeFor[struct {
			good `section:"G" desc:"g" envPrefix:"G_"`
		}](), "would rename its variables"},
		{"variable without env tag", reflect.TypeFor[struct {
			untagged `section:"U" desc:"u"`
		}](), "field untagged.A has no env tag"},
		{"variable without desc", reflect.TypeFor[struct {
			nodesc `section:"N" desc:"n"`
		}](), "field nodesc.A (A) has no desc"},
		{"nested section", reflect.TypeFor[struct {
			nested `section:"N" desc:"n"`
		}](), "sections do not nest"},
		{"one name in two sections", reflect.TypeFor[struct {
			good  `section:"G" desc:"g"`
			other `section:"O" desc:"o"`
		}](), "is not promoted"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, bad := configFields(tc.typ)
			switch {
			case tc.want == "" && len(bad) > 0:
				t.Errorf("problems %q, want none", bad)
			case tc.want != "" && (len(bad) == 0 || !strings.Contains(strings.Join(bad, "\n"), tc.want)):
				t.Errorf("problems %q, want one containing %q", bad, tc.want)
			}
		})
	}
}

// TestConfigFieldsDocumented holds Config to configFields' rules, so that a new variable cannot
// skip the manual or its section, and checks that ConfigVars describes exactly those fields.
func TestConfigFieldsDocumented(t *testing.T) {
	t.Parallel()
	fields, bad := configFields(reflect.TypeFor[Config]())
	for _, b := range bad {
		t.Error(b)
	}
	vars := ConfigVars()
	if len(vars) != len(fields) {
		t.Fatalf("ConfigVars() has %d entries, Config has %d variables", len(vars), len(fields))
	}
	for i, f := range fields {
		v := vars[i]
		if v.Name != EnvPrefix+f.key || v.Description != f.desc || v.Default != f.def || v.Section == "" {
			t.Errorf("ConfigVars()[%d] = %+v, does not describe field %s", i, v, f.path)
		}
		if v.Type == "" {
			t.Errorf("%s has no type name", v.Name)
		}
		// describeEnvError names a variable that does not parse from its field's name.
		if got := fieldKey(f.name); got != f.key {
			t.Errorf("fieldKey(%q) = %q, want %q", f.name, got, f.key)
		}
	}
	// Each default, given explicitly, is accepted too.
	for _, v := range vars {
		if v.Default == "" {
			continue
		}
		if _, err := LoadConfig(withWebhook(v.Name + "=" + v.Default)); err != nil {
			t.Errorf("default of %s (%q) is refused: %v", v.Name, v.Default, err)
		}
	}
}

func TestConfigUsage(t *testing.T) {
	t.Parallel()
	usage := ConfigUsage()
	for _, v := range ConfigVars() {
		if !strings.Contains(usage, "  "+v.Name+"  ") {
			t.Errorf("usage does not list %s", v.Name)
		}
	}
	checkGrouped(t, "usage", usage, func(s configSection) string { return s.Title + " — " },
		func(v ConfigVar) string { return "\n  " + v.Name + "  " })
	if !strings.Contains(usage, "WSBRIDGE_WEBHOOK_URL  URL (required)") {
		t.Errorf("usage does not mark WSBRIDGE_WEBHOOK_URL as required:\n%s", usage)
	}
	for line := range strings.SplitSeq(usage, "\n") {
		if len(line) > 6+76 && strings.Contains(strings.TrimSpace(line), " ") && strings.HasPrefix(line, "      ") {
			t.Errorf("description line longer than 76 columns: %q", line)
		}
	}
}
