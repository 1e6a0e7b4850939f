package bridge

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"path"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/caarlos0/env/v11"
)

// EnvPrefix starts every configuration variable.
const EnvPrefix = "WSBRIDGE_"

// Config is the whole configuration, read from WSBRIDGE_* environment variables only. It is made
// of one section per concern, embedded so that their fields and methods are promoted: code reads
// cfg.WebhookTimeout, not cfg.WebhookConfig.WebhookTimeout, and a field can move between sections
// without a change elsewhere (only a composite literal names the section: Config{PushAPIConfig:
// PushAPIConfig{InternalListen: a}}). The section types are exported because caarlos0/env sets
// fields by reflection, which cannot set an unexported embedded struct. The desc tags are the manual: docs/configuration.md and `wsbridge -h`
// are generated from them, grouped by section (the section tag is its title, the section's desc
// its purpose), and a test keeps the committed table in sync and fails for a variable that has no
// manual or no section.
//
// The sections carry no envPrefix: caarlos0/env would prepend it to every key of the section, but
// the names predate the sections and are kept (the webhook section also holds BREAKER_*, CLOSE_*
// and HANDSHAKE_TIMEOUT; the broker section BROKER itself), and an env tag that spells the whole
// name keeps `grep WEBHOOK_URL` finding it and describeEnvError naming it from the tag alone.
type Config struct {
	ListenConfig  `section:"Public listener" desc:"Where browsers connect: the address, the WebSocket paths and origins, the proxy to the PHP app, and the proxies in front."`
	TLSConfig     `section:"TLS" desc:"The certificate of the public listener; without one it serves plain HTTP."`
	PushAPIConfig `section:"Push API" desc:"The internal listener where PHP pushes messages, and its limits."`
	WebhookConfig `section:"Webhooks" desc:"How events reach PHP: URLs and signing, concurrency, timeouts and retries, the breaker, and the pacing of close webhooks."`
	LimitConfig   `section:"Limits" desc:"What one node, one client address and one connection may take: connections, handshakes, message rate and sizes, channels."`
	ConnConfig    `section:"Connections" desc:"How each open connection is served: its send queue, compression, write timeout and keepalive pings."`
	BrokerConfig  `section:"Broker" desc:"How this node shares pushes and connection state with the other nodes, and its name among them."`
	ProcessConfig `section:"Process and logs" desc:"Shutdown and logging."`
}

// ListenConfig is the Public listener section of Config.
type ListenConfig struct {
	Listen               string        `env:"LISTEN" envDefault:":8080" desc:"Public address (host:port) for browsers: the WebSocket endpoint(s) and, with UPSTREAM set, the reverse proxy to the PHP app."`
	WSPaths              []string      `env:"WS_PATH" envDefault:"/ws" desc:"Comma-separated URL paths that accept WebSocket connections."`
	AllowedOrigins       []string      `env:"ALLOWED_ORIGINS" desc:"Comma-separated Origin patterns allowed to open a WebSocket, matched with path.Match against the Origin's host (or scheme://host when the pattern has ://), case-insensitively. Empty: only the request's own host. \"*\" allows any origin. Requests without an Origin header (non-browser clients) are allowed."`
	Upstream             *url.URL      `env:"UPSTREAM" desc:"Base URL (http or https) of the PHP app. Every public request that is not a WebSocket path is reverse-proxied there, with X-Forwarded-For/-Host/-Proto set. Empty: such requests get 404."`
	TrustedProxies       []string      `env:"TRUSTED_PROXIES" desc:"Comma-separated CIDRs (or single addresses) of the proxies in front of wsbridge, e.g. 10.0.0.0/8,127.0.0.1. From a trusted peer, the client's address is found by walking X-Forwarded-For from the right past trusted hops (or read from CLIENT_IP_HEADER); it is used for the per-address limits, logs and remote_addr, and PHP sees X-Forwarded-For from that address on. From any other peer, a client's X-Forwarded-For (and CLIENT_IP_HEADER) is dropped: PHP sees only the peer's address. Empty: no peer is trusted (unless CLIENT_IP_HEADER is set, see there)."`
	ClientIPHeader       string        `env:"CLIENT_IP_HEADER" desc:"Header that carries the real client address when a trusted proxy (nginx) stands in front: X-Real-IP, True-Client-IP, CF-Connecting-IP, or X-Forwarded-For. With TRUSTED_PROXIES it is read only from a trusted peer. Without TRUSTED_PROXIES (the old behaviour, kept for compatibility) it is read from every peer (X-Forwarded-For: its last address) and client headers reach PHP as sent: set it then only when every request comes through that proxy, or clients can claim any address. Empty: the TCP peer address, or what TRUSTED_PROXIES finds."`
	MaxHeaderBytes       int           `env:"MAX_HEADER_BYTES" envDefault:"65536" desc:"Largest request header block the public listener reads (request line and headers, in bytes); a larger one gets 431."`
	ProxyBodyIdleTimeout time.Duration `env:"PROXY_BODY_IDLE_TIMEOUT" envDefault:"30s" desc:"Longest pause between two reads of a reverse-proxied request's body; a client that sends nothing for that long is cut off (a slow upload that keeps sending is not). The headers are bounded by a 10s read timeout."`
}

// TLSConfig is the TLS section of Config.
type TLSConfig struct {
	TLSCertFile string `env:"TLS_CERT_FILE" desc:"Path of a PEM certificate chain (leaf first, as certbot's fullchain.pem). With TLS_KEY_FILE, the public listener serves TLS only (wss://, and HTTP/2 for proxied pages; WebSockets use HTTP/1.1): TLS 1.2 or later, Go's default cipher suites, no client certificates. Both files are checked at start. They are reloaded without a restart: a handshake looks at them (stat) at most every 5s, and when either changed (rewritten, renamed over, or a symlink moved, as certbot renews) the new pair is served from that handshake on; a pair that does not load is logged as an error and the old one kept. Empty: plain HTTP (ws://)."`
	TLSKeyFile  string `env:"TLS_KEY_FILE" desc:"Path of the PEM private key of TLS_CERT_FILE (certbot's privkey.pem). Set both or neither."`
}

// PushAPIConfig is the Push API section of Config.
type PushAPIConfig struct {
	InternalListen string `env:"INTERNAL_LISTEN" envDefault:"127.0.0.1:8081" desc:"Address of the internal listener (push API, health): host:port, or unix:/path/to.sock for a unix socket. Must differ from LISTEN."`
	APIToken       string `env:"API_TOKEN,unset" desc:"Bearer token required on /v1/ of the internal listener. Required when INTERNAL_LISTEN is neither loopback nor a unix socket."`
	APITokenFile   string `env:"API_TOKEN_FILE,file" desc:"Path of a file holding API_TOKEN (surrounding whitespace is trimmed). Set one of the two."`
	MaxPushBody    int64  `env:"MAX_PUSH_BODY" envDefault:"1048576" desc:"Largest push API request body, in bytes."`
	MaxBatch       int    `env:"MAX_BATCH" envDefault:"1000" desc:"Most publications in one batch request."`
	MaxListResult  int    `env:"MAX_LIST_RESULT" envDefault:"10000" desc:"Most connections one GET /v1/connections or /v1/channels/{name} answer lists; the count is always exact."`
}

// WebhookConfig is the Webhooks section of Config.
type WebhookConfig struct {
	WebhookURL              *url.URL      `env:"WEBHOOK_URL,required" desc:"URL (http or https) that receives every webhook (open, message, close) as a JSON POST."`
	WebhookOpenURL          *url.URL      `env:"WEBHOOK_OPEN_URL" desc:"Optional URL for open webhooks only, instead of WEBHOOK_URL."`
	WebhookMessageURL       *url.URL      `env:"WEBHOOK_MESSAGE_URL" desc:"Optional URL for message webhooks only, instead of WEBHOOK_URL."`
	WebhookCloseURL         *url.URL      `env:"WEBHOOK_CLOSE_URL" desc:"Optional URL for close webhooks only, instead of WEBHOOK_URL."`
	WebhookSecret           string        `env:"WEBHOOK_SECRET,unset" desc:"HMAC-SHA256 key that signs every webhook (WsBridge-Signature header). Empty: webhooks are not signed, and a warning is logged at start (anyone who can reach PHP's webhook URL can then forge events). Only whitespace is an error."`
	WebhookSecretFile       string        `env:"WEBHOOK_SECRET_FILE,file" desc:"Path of a file holding WEBHOOK_SECRET (surrounding whitespace is trimmed). Set one of the two."`
	WebhookConcurrency      int           `env:"WEBHOOK_CONCURRENCY" envDefault:"8" desc:"Most webhook requests in flight at once, over all connections. Set it to the PHP-FPM pool's pm.max_children (or a little below) so webhooks wait here rather than in FPM's backlog."`
	WebhookOpenShare        float64       `env:"WEBHOOK_OPEN_SHARE" envDefault:"0.75" desc:"Share of WEBHOOK_CONCURRENCY that open webhooks may hold at once (rounded down, at least 1); message and close webhooks may use every slot. The rest is kept for the connections PHP already accepted, so a flood of handshakes cannot delay their messages. With the default and WEBHOOK_CONCURRENCY=8, opens hold at most 6; with 2, at most 1. 1: opens may hold every slot."`
	WebhookQueueWait        time.Duration `env:"WEBHOOK_QUEUE_WAIT" envDefault:"10s" desc:"Longest wait for a free WEBHOOK_CONCURRENCY slot before an attempt is sent. An attempt that gets none is not sent and not held against PHP (the breaker does not count it); it is retried as a failed attempt would be. An open webhook waits at most until HANDSHAKE_TIMEOUT."`
	WebhookTimeout          time.Duration `env:"WEBHOOK_TIMEOUT" envDefault:"10s" desc:"Longest wait for PHP's answer to one webhook attempt, from the moment it holds a slot (the wait for one is WEBHOOK_QUEUE_WAIT's) to the end of the answer. A timed-out attempt is retried (WEBHOOK_RETRIES)."`
	WebhookRetries          int           `env:"WEBHOOK_RETRIES" envDefault:"3" desc:"Extra attempts for a webhook that got no answer (connection refused or cut, timeout) or a 5xx answer, with the same WsBridge-Event-Id so PHP can tell a retry from a new event. 0: no retries."`
	WebhookBackoff          time.Duration `env:"WEBHOOK_BACKOFF" envDefault:"100ms" desc:"Wait before the first retry; it doubles for each further retry, up to WEBHOOK_BACKOFF_MAX, and half of each wait is random (jitter) so that many connections do not retry in step."`
	WebhookBackoffMax       time.Duration `env:"WEBHOOK_BACKOFF_MAX" envDefault:"2s" desc:"Longest wait between two attempts of one webhook."`
	BreakerFailures         int           `env:"BREAKER_FAILURES" envDefault:"10" desc:"Consecutive failed webhook attempts (no answer or 5xx, over all connections) after which PHP is considered down: new connections get 503 at once, message webhooks stop trying until BREAKER_COOLDOWN has passed, close webhooks wait for PHP to come back, and /readyz answers 503. Attempts that were never sent (no free slot) do not count. 0: never."`
	BreakerCooldown         time.Duration `env:"BREAKER_COOLDOWN" envDefault:"1s" desc:"Time PHP is left alone once considered down; then one webhook is let through as a probe, and its success lets all others through again."`
	CloseRate               float64       `env:"CLOSE_RATE" envDefault:"500" desc:"Most close webhooks started per second (token bucket, burst CLOSE_BURST), so a mass disconnect does not take every PHP worker from the connections that stay. Closes wait in a queue meanwhile; none is dropped. Lifted during shutdown, when only WEBHOOK_CONCURRENCY bounds the drain."`
	CloseBurst              int           `env:"CLOSE_BURST" envDefault:"50" desc:"Close webhooks that may start at once before CLOSE_RATE applies."`
	HandshakeTimeout        time.Duration `env:"HANDSHAKE_TIMEOUT" envDefault:"15s" desc:"Longest time from an upgrade request to PHP's answer to its open webhook, retries included; past it the client gets 503."`
	WebhookMaxReply         int64         `env:"WEBHOOK_MAX_REPLY" envDefault:"1048576" desc:"Largest webhook reply body PHP may send, in bytes; a larger one is refused as malformed."`
	ForwardHeaders          []string      `env:"FORWARD_HEADERS" envDefault:"Cookie,Authorization,User-Agent,Origin,Accept-Language,X-Forwarded-For" desc:"Comma-separated handshake headers copied into the open webhook's request.headers. X-Forwarded-For gets the client's address appended. WsBridge-* headers cannot be forwarded."`
	MaxForwardedHeaderBytes int           `env:"MAX_FORWARDED_HEADER_BYTES" envDefault:"16384" desc:"Largest total size (names and values, in bytes) of the FORWARD_HEADERS copied into one open webhook; a handshake with more gets 431 before PHP is asked."`
}

// LimitConfig is the Limits section of Config.
type LimitConfig struct {
	MaxConnections            int     `env:"MAX_CONNECTIONS" envDefault:"100000" desc:"Most WebSocket connections this node holds; an upgrade beyond it gets 503 with Retry-After before PHP is asked. 0: no limit."`
	MaxConnectionsPerIP       int     `env:"MAX_CONNECTIONS_PER_IP" envDefault:"0" desc:"Most connections from one client address (see CLIENT_IP_HEADER); one more gets 429 before PHP is asked. 0: no limit. Behind a proxy, set CLIENT_IP_HEADER or every client shares the proxy's address."`
	MaxPendingHandshakesPerIP int     `env:"MAX_PENDING_HANDSHAKES_PER_IP" envDefault:"64" desc:"Most upgrade requests from one client address that may wait for PHP's answer to their open webhook at once; one more gets 429 with Retry-After before PHP is asked. 0: no limit. Behind a proxy, set TRUSTED_PROXIES, or every client shares the proxy's address."`
	HandshakeRatePerIP        float64 `env:"HANDSHAKE_RATE_PER_IP" envDefault:"0" desc:"Most upgrade requests per second from one client address, on average (token bucket, burst HANDSHAKE_BURST_PER_IP); every attempt counts, refused ones too. Beyond it: 429 with Retry-After before PHP is asked. 0: no limit. Idle addresses are forgotten, so memory stays bounded by the addresses seen lately."`
	HandshakeBurstPerIP       int     `env:"HANDSHAKE_BURST_PER_IP" envDefault:"20" desc:"Upgrade requests one address may send at once before HANDSHAKE_RATE_PER_IP applies."`
	MessageRate               float64 `env:"MESSAGE_RATE" envDefault:"100" desc:"Most messages per second one client may send, on average (token bucket, burst MESSAGE_BURST); pings count too, and a fragmented message costs 1 plus 1 per continuation frame; a client that sends faster is closed with 1008 \"message rate exceeded\". 0: no limit."`
	MessageBurst              int     `env:"MESSAGE_BURST" envDefault:"200" desc:"Messages a client may send at once before MESSAGE_RATE applies."`
	MaxChannels               int     `env:"MAX_CHANNELS" envDefault:"100" desc:"Most channels one connection may be in. A reply that would go beyond it is refused whole; a push API join that would is refused with 409."`
	MaxMessageSize            int64   `env:"MAX_MESSAGE_SIZE" envDefault:"65536" desc:"Largest message a client may send, in bytes; a larger one closes the connection with 1009."`
	MaxMetaSize               int     `env:"MAX_META_SIZE" envDefault:"8192" desc:"Largest meta object PHP may store on a connection, in bytes of JSON."`
	MaxNameLength             int     `env:"MAX_NAME_LENGTH" envDefault:"200" desc:"Longest channel name or user id, in bytes."`
}

// ConnConfig is the Connections section of Config.
type ConnConfig struct {
	SendQueue            int           `env:"SEND_QUEUE" envDefault:"2048" desc:"Messages that may wait to be written to one client. A client that falls further behind (this many messages, or SEND_QUEUE_BYTES) is disconnected at once (close webhook: initiator slow_consumer, code 1008, reason \"slow consumer\"). The default holds a whole push batch (MAX_BATCH) and a reply's send list."`
	SendQueueBytes       int           `env:"SEND_QUEUE_BYTES" envDefault:"4194304" desc:"Bytes of message payload that may wait to be written to one client; past it the client is disconnected as a slow consumer, as for SEND_QUEUE. The default holds what one push request (MAX_PUSH_BODY) and one reply (WEBHOOK_MAX_REPLY) can carry, twice over. At most 1073741824."`
	Compression          string        `env:"COMPRESSION" envDefault:"off" desc:"permessage-deflate (RFC 7692): on negotiates it with every client that offers it (all browsers do), always without context takeover, so that a broadcast is compressed once and its bytes shared by every recipient; off never negotiates it. Messages to clients shorter than COMPRESSION_THRESHOLD, or that would not get smaller, go uncompressed; compressed messages from clients are inflated, MAX_MESSAGE_SIZE applying to the inflated size."`
	CompressionThreshold int           `env:"COMPRESSION_THRESHOLD" envDefault:"512" desc:"Smallest message to a client, in bytes, that is compressed when COMPRESSION is on."`
	WriteTimeout         time.Duration `env:"WRITE_TIMEOUT" envDefault:"10s" desc:"Longest time one write to a client may take; a client that does not read for that long is disconnected (initiator slow_consumer, reason \"write timeout\")."`
	PingInterval         time.Duration `env:"PING_INTERVAL" envDefault:"25s" desc:"Time between keepalive pings to each client. Keep it below proxies' idle timeouts (nginx: 60s)."`
	PingTimeout          time.Duration `env:"PING_TIMEOUT" envDefault:"10s" desc:"Longest wait for a client's pong; no pong in time drops the connection (close webhook: initiator server, code 1006, reason \"ping timeout\")."`
}

// BrokerConfig is the Broker section of Config.
type BrokerConfig struct {
	NodeID        string        `env:"NODE_ID" desc:"This node's name, the prefix of its connection ids (letters, digits, - and _; at most 32). Empty: a random one at each start."`
	Broker        string        `env:"BROKER" envDefault:"memory" desc:"How nodes share pushes and state: memory (one node; nothing leaves the process), redis (REDIS_URL) or nats (NATS_URL): several nodes as one (docs/cluster.md)."`
	BrokerTimeout time.Duration `env:"BROKER_TIMEOUT" envDefault:"2s" desc:"Longest wait for the broker on one call: forwarding a push, a reply's publications or a join/leave/close to the other nodes (the caller then gets a broker_error, applied on this node only), a cluster-wide query, and the /readyz check of a broker that has one. It bounds how long a slow broker can hold a connection's reader."`
	RedisURL      string        `env:"REDIS_URL" desc:"With BROKER=redis: the Redis server, as go-redis reads it: redis://[user:password@]host:port/db, rediss://… (TLS), unix:///run/redis.sock, or redis://host:port?master_name=NAME&addr=host2:port for Sentinel."`
	NatsURL       string        `env:"NATS_URL" desc:"With BROKER=nats: the NATS servers, e.g. nats://127.0.0.1:4222 (comma-separated list allowed)."`
	ClusterPrefix string        `env:"CLUSTER_PREFIX" envDefault:"wsbridge" desc:"Prefix of every Redis key and channel and NATS subject of the cluster (letters, digits, - and _; at most 64). Clusters that share an engine need different prefixes; PHP publishes to <prefix>:publish (Redis) or <prefix>.publish (NATS)."`
	NodeTimeout   time.Duration `env:"NODE_TIMEOUT" envDefault:"10s" desc:"With BROKER=redis or nats: a node silent this long is dead, and a surviving node sends the close webhooks (initiator node_lost) of its connections. Nodes beat every third of it. At least 3 times BROKER_TIMEOUT is wise, so that a slow engine does not look like a dead node."`
}

// ProcessConfig is the Process and logs section of Config.
type ProcessConfig struct {
	ShutdownTimeout   time.Duration `env:"SHUTDOWN_TIMEOUT" envDefault:"30s" desc:"On SIGTERM/SIGINT, longest time to close every connection (code 1001) and deliver every close webhook before exiting."`
	LogLevel          string        `env:"LOG_LEVEL" envDefault:"info" desc:"Log level: debug, info, warn or error. Logs are JSON lines on stderr."`
	LogRepeatLimit    int           `env:"LOG_REPEAT_LIMIT" envDefault:"10" desc:"Most log lines with the same level and message written per LOG_REPEAT_INTERVAL; the rest are counted and summed up in one line \"suppressed similar log lines\" (with keys message, suppressed and interval, at the same level) at the interval's end, so a flood of clients cannot flood the logs. 0: no limit."`
	LogRepeatInterval time.Duration `env:"LOG_REPEAT_INTERVAL" envDefault:"10s" desc:"The interval of LOG_REPEAT_LIMIT."`
}

// LoadConfig reads the configuration from environ (KEY=value pairs, as os.Environ returns).
// Every problem found, unparsable or invalid, is reported in one error, one line per variable.
func LoadConfig(environ []string) (Config, error) {
	vars := make(map[string]string, len(environ))
	for _, kv := range environ {
		// The bare prefix names no variable, but caarlos0/env looks it up as the key of each
		// section (an embedded struct without an env tag) and, finding a value, would try to
		// parse it into the struct.
		if k, v, ok := strings.Cut(kv, "="); ok && k != EnvPrefix {
			vars[k] = v
		}
	}
	cfg, err := env.ParseAsWithOptions[Config](env.Options{Prefix: EnvPrefix, Environment: vars})
	var problems []string
	failed := map[string]bool{}
	if err != nil {
		var agg env.AggregateError
		if !errors.As(err, &agg) {
			return cfg, err
		}
		for _, e := range agg.Errors {
			key, msg := describeEnvError(e)
			failed[key] = true
			problems = append(problems, msg)
		}
	}
	for _, p := range cfg.validate() {
		if !failed[p.key] {
			problems = append(problems, EnvPrefix+p.key+": "+p.msg)
		}
	}
	if len(problems) > 0 {
		return cfg, &ConfigError{Problems: problems}
	}
	return cfg, nil
}

// ConfigError lists every bad configuration value.
type ConfigError struct{ Problems []string }

func (e *ConfigError) Error() string {
	return "invalid configuration:\n  " + strings.Join(e.Problems, "\n  ")
}

// describeEnvError turns one caarlos0/env error into the variable's key (without prefix) and a
// message that names it.
func describeEnvError(err error) (key, msg string) {
	var notSet env.VarIsNotSetError
	var empty env.EmptyVarError
	var parse env.ParseError
	var file env.LoadFileContentError
	switch {
	case errors.As(err, &notSet):
		return strings.TrimPrefix(notSet.Key, EnvPrefix), notSet.Key + ": required, not set"
	case errors.As(err, &empty):
		return strings.TrimPrefix(empty.Key, EnvPrefix), empty.Key + ": must not be empty"
	case errors.As(err, &parse):
		key := fieldKey(parse.Name)
		return key, fmt.Sprintf("%s%s: cannot parse as %s: %v", EnvPrefix, key, parse.Type, unwrapParse(parse.Err))
	case errors.As(err, &file):
		key := strings.TrimPrefix(file.Key, EnvPrefix)
		return key, fmt.Sprintf("%s: cannot read file %q: %v", file.Key, file.Filename, file.Err)
	}
	return "", err.Error()
}

// unwrapParse drops strconv's repetition of the input ("strconv.ParseInt: parsing \"x\": ...").
func unwrapParse(err error) error {
	for {
		u := errors.Unwrap(err)
		if u == nil {
			return err
		}
		err = u
	}
}

// fieldKey maps a Config field name to its variable key without the prefix.
func fieldKey(field string) string {
	f, ok := reflect.TypeFor[Config]().FieldByName(field)
	if !ok {
		return field
	}
	key, _, _ := strings.Cut(f.Tag.Get("env"), ",")
	return key
}

type problem struct{ key, msg string }

var nodeIDPattern = regexp.MustCompile(`^[A-Za-z0-9_-]{1,32}$`)

// problems collects what validate finds: every problem, not only the first, each naming its
// variable by its key without the prefix.
type problems []problem

func (ps *problems) add(key, format string, args ...any) {
	*ps = append(*ps, problem{key, fmt.Sprintf(format, args...)})
}

// reported tells whether key already has a problem, so that a later check does not pile a
// second, consequential one on it.
func (ps problems) reported(key string) bool {
	return slices.ContainsFunc(ps, func(p problem) bool { return p.key == key })
}

func (ps *problems) positive(key string, v int64) {
	if v <= 0 {
		ps.add(key, "must be greater than 0, got %d", v)
	}
}

func (ps *problems) nonNegative(key string, v int) {
	if v < 0 {
		ps.add(key, "must be 0 or more, got %d", v)
	}
}

func (ps *problems) duration(key string, d time.Duration) {
	if d <= 0 {
		ps.add(key, "must be a positive duration such as 10s, got %s", d)
	}
}

// validate checks values the parser accepted but the bridge cannot use, and fills derived ones
// (secrets from files). Each section checks its own variables; what involves two sections is
// checked once, in checkAcross, and first, so that a section can leave alone a variable already
// found wrong. It reports every problem, not only the first.
func (c *Config) validate() []problem {
	var ps problems
	c.checkAcross(&ps)
	c.ListenConfig.check(&ps)
	// The TLS section's check lives in tls.go, beside the loading of the pair it tries.
	c.validateTLS(ps.add)
	c.PushAPIConfig.check(&ps)
	c.WebhookConfig.check(&ps)
	c.LimitConfig.check(&ps)
	c.ConnConfig.check(&ps)
	c.BrokerConfig.check(&ps)
	c.ProcessConfig.check(&ps)
	return ps
}

// checkAcross holds every check that involves variables of two sections.
func (c *Config) checkAcross(ps *problems) {
	if c.InternalListen == c.Listen {
		ps.add("INTERNAL_LISTEN", "must not be the public address %q: the push API is never public", c.Listen)
	}
}

func (s *ListenConfig) check(ps *problems) {
	if _, _, err := net.SplitHostPort(s.Listen); err != nil {
		ps.add("LISTEN", "want host:port, got %q", s.Listen)
	}
	for _, p := range slices.Compact(slices.Clone(s.WSPaths)) {
		if !strings.HasPrefix(p, "/") {
			ps.add("WS_PATH", "path %q must start with /", p)
		} else if strings.ContainsAny(p, "{} \t?#") {
			// ServeMux would read braces as wildcards (or refuse the pattern at start).
			ps.add("WS_PATH", "path %q: use a plain path without {, }, spaces, ? or #", p)
		}
	}
	if len(s.WSPaths) == 0 {
		ps.add("WS_PATH", "needs at least one path")
	}
	for _, o := range s.AllowedOrigins {
		if _, err := path.Match(o, ""); err != nil {
			ps.add("ALLOWED_ORIGINS", "bad pattern %q: %v", o, err)
		}
	}
	if s.Upstream != nil {
		if err := checkHTTPURL(s.Upstream); err != nil {
			ps.add("UPSTREAM", "%v", err)
		}
	}
	if _, err := parseTrusted(s.TrustedProxies); err != nil {
		ps.add("TRUSTED_PROXIES", "%v", err)
	}
	switch http.CanonicalHeaderKey(s.ClientIPHeader) {
	case "", "X-Real-Ip", "X-Forwarded-For", "True-Client-Ip", "Cf-Connecting-Ip":
	default:
		ps.add("CLIENT_IP_HEADER", "%q: use X-Real-IP, X-Forwarded-For, True-Client-IP or CF-Connecting-IP", s.ClientIPHeader)
	}
	ps.positive("MAX_HEADER_BYTES", int64(s.MaxHeaderBytes))
	ps.duration("PROXY_BODY_IDLE_TIMEOUT", s.ProxyBodyIdleTimeout)
}

func (s *PushAPIConfig) check(ps *problems) {
	internalOK := false
	switch sock, isUnix := strings.CutPrefix(s.InternalListen, "unix:"); {
	case ps.reported("INTERNAL_LISTEN"):
		// By checkAcross: the address is wrong whatever its form, and it says so already.
	case isUnix:
		if sock == "" {
			ps.add("INTERNAL_LISTEN", "unix: needs a socket path")
		}
		internalOK = sock != ""
	default:
		if _, _, err := net.SplitHostPort(s.InternalListen); err != nil {
			ps.add("INTERNAL_LISTEN", "want host:port or unix:/path, got %q", s.InternalListen)
		} else {
			internalOK = true
		}
	}
	var err error
	if s.APIToken, err = oneSecret(s.APIToken, s.APITokenFile); err != nil {
		ps.add("API_TOKEN", "%v", err)
	} else if s.APIToken == "" && internalOK && !s.InternalIsLocal() {
		ps.add("API_TOKEN", "required because INTERNAL_LISTEN %q is reachable beyond this host", s.InternalListen)
	}
	ps.positive("MAX_PUSH_BODY", s.MaxPushBody)
	ps.positive("MAX_BATCH", int64(s.MaxBatch))
	ps.positive("MAX_LIST_RESULT", int64(s.MaxListResult))
}

func (s *WebhookConfig) check(ps *problems) {
	if s.WebhookURL == nil { // unset is reported by the parser; this is WSBRIDGE_WEBHOOK_URL=""
		ps.add("WEBHOOK_URL", "required, must not be empty")
	}
	webhookURLs := []struct {
		key string
		u   *url.URL
	}{{"WEBHOOK_URL", s.WebhookURL}, {"WEBHOOK_OPEN_URL", s.WebhookOpenURL},
		{"WEBHOOK_MESSAGE_URL", s.WebhookMessageURL}, {"WEBHOOK_CLOSE_URL", s.WebhookCloseURL}}
	for _, w := range webhookURLs {
		if w.u != nil {
			if err := checkHTTPURL(w.u); err != nil {
				ps.add(w.key, "%v", err)
			}
		}
	}
	var err error
	if s.WebhookSecret, err = oneSecret(s.WebhookSecret, s.WebhookSecretFile); err != nil {
		ps.add("WEBHOOK_SECRET", "%v", err)
	}
	for _, h := range s.ForwardHeaders {
		if strings.HasPrefix(strings.ToLower(h), "wsbridge-") {
			ps.add("FORWARD_HEADERS", "%q: WsBridge-* headers are the bridge's own and are never forwarded", h)
		}
	}
	ps.positive("WEBHOOK_CONCURRENCY", int64(s.WebhookConcurrency))
	if !(s.WebhookOpenShare > 0 && s.WebhookOpenShare <= 1) { // also refuses NaN
		ps.add("WEBHOOK_OPEN_SHARE", "must be greater than 0 and at most 1, got %g", s.WebhookOpenShare)
	}
	ps.duration("WEBHOOK_QUEUE_WAIT", s.WebhookQueueWait)
	ps.duration("WEBHOOK_TIMEOUT", s.WebhookTimeout)
	ps.nonNegative("WEBHOOK_RETRIES", s.WebhookRetries)
	ps.duration("WEBHOOK_BACKOFF", s.WebhookBackoff)
	ps.duration("WEBHOOK_BACKOFF_MAX", s.WebhookBackoffMax)
	if s.WebhookBackoffMax < s.WebhookBackoff {
		ps.add("WEBHOOK_BACKOFF_MAX", "%s is shorter than WEBHOOK_BACKOFF (%s)", s.WebhookBackoffMax, s.WebhookBackoff)
	}
	ps.nonNegative("BREAKER_FAILURES", s.BreakerFailures)
	ps.duration("BREAKER_COOLDOWN", s.BreakerCooldown)
	if s.CloseRate <= 0 {
		ps.add("CLOSE_RATE", "must be greater than 0, got %g", s.CloseRate)
	}
	ps.positive("CLOSE_BURST", int64(s.CloseBurst))
	ps.duration("HANDSHAKE_TIMEOUT", s.HandshakeTimeout)
	ps.positive("WEBHOOK_MAX_REPLY", s.WebhookMaxReply)
	ps.positive("MAX_FORWARDED_HEADER_BYTES", int64(s.MaxForwardedHeaderBytes))
}

func (s *LimitConfig) check(ps *problems) {
	ps.nonNegative("MAX_CONNECTIONS", s.MaxConnections)
	ps.nonNegative("MAX_CONNECTIONS_PER_IP", s.MaxConnectionsPerIP)
	ps.nonNegative("MAX_PENDING_HANDSHAKES_PER_IP", s.MaxPendingHandshakesPerIP)
	if s.HandshakeRatePerIP < 0 {
		ps.add("HANDSHAKE_RATE_PER_IP", "must be 0 (no limit) or more, got %g", s.HandshakeRatePerIP)
	}
	ps.positive("HANDSHAKE_BURST_PER_IP", int64(s.HandshakeBurstPerIP))
	if s.MessageRate < 0 {
		ps.add("MESSAGE_RATE", "must be 0 (no limit) or more, got %g", s.MessageRate)
	}
	ps.positive("MESSAGE_BURST", int64(s.MessageBurst))
	ps.positive("MAX_CHANNELS", int64(s.MaxChannels))
	ps.positive("MAX_MESSAGE_SIZE", s.MaxMessageSize)
	ps.positive("MAX_META_SIZE", int64(s.MaxMetaSize))
	ps.positive("MAX_NAME_LENGTH", int64(s.MaxNameLength))
}

func (s *ConnConfig) check(ps *problems) {
	ps.positive("SEND_QUEUE", int64(s.SendQueue))
	ps.positive("SEND_QUEUE_BYTES", int64(s.SendQueueBytes))
	// The send queue counts frames and bytes in int32 (writer.go: idle connections stay small).
	if s.SendQueue > 1<<30 {
		ps.add("SEND_QUEUE", "must be at most 1073741824, got %d", s.SendQueue)
	}
	if s.SendQueueBytes > 1<<30 {
		ps.add("SEND_QUEUE_BYTES", "must be at most 1073741824, got %d", s.SendQueueBytes)
	}
	switch s.Compression {
	case "on", "off":
	default:
		ps.add("COMPRESSION", "%q: use on or off", s.Compression)
	}
	ps.nonNegative("COMPRESSION_THRESHOLD", s.CompressionThreshold)
	ps.duration("WRITE_TIMEOUT", s.WriteTimeout)
	ps.duration("PING_INTERVAL", s.PingInterval)
	ps.duration("PING_TIMEOUT", s.PingTimeout)
}

func (s *BrokerConfig) check(ps *problems) {
	if s.NodeID != "" && !nodeIDPattern.MatchString(s.NodeID) {
		ps.add("NODE_ID", "%q: use 1-32 letters, digits, - or _", s.NodeID)
	}
	ps.duration("BROKER_TIMEOUT", s.BrokerTimeout)
	s.checkCluster(ps)
}

var clusterPrefixPattern = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// checkCluster checks what only the cluster brokers read.
func (s *BrokerConfig) checkCluster(ps *problems) {
	switch s.Broker {
	case "memory":
	case "redis":
		if s.RedisURL == "" {
			ps.add("REDIS_URL", "must be set with BROKER=redis, e.g. redis://127.0.0.1:6379/0")
		} else if u, err := url.Parse(s.RedisURL); err != nil || (u.Scheme != "redis" && u.Scheme != "rediss" && u.Scheme != "unix") {
			ps.add("REDIS_URL", "%q: use redis://host:port/db, rediss://… or unix:///path", redactURL(s.RedisURL))
		}
	case "nats":
		if s.NatsURL == "" {
			ps.add("NATS_URL", "must be set with BROKER=nats, e.g. nats://127.0.0.1:4222")
		}
	default:
		ps.add("BROKER", "%q: use memory, redis or nats", s.Broker)
	}
	if !clusterPrefixPattern.MatchString(s.ClusterPrefix) {
		ps.add("CLUSTER_PREFIX", "%q: use 1-64 letters, digits, - or _", s.ClusterPrefix)
	}
	ps.duration("NODE_TIMEOUT", s.NodeTimeout)
}

// redactURL hides a URL's password: a problem is printed, and the URL may carry one.
func redactURL(raw string) string {
	if u, err := url.Parse(raw); err == nil {
		return u.Redacted()
	}
	return "(unparseable URL)"
}

func (s *ProcessConfig) check(ps *problems) {
	ps.duration("SHUTDOWN_TIMEOUT", s.ShutdownTimeout)
	switch strings.ToLower(s.LogLevel) {
	case "debug", "info", "warn", "error":
	default:
		ps.add("LOG_LEVEL", "%q: use debug, info, warn or error", s.LogLevel)
	}
	ps.nonNegative("LOG_REPEAT_LIMIT", s.LogRepeatLimit)
	ps.duration("LOG_REPEAT_INTERVAL", s.LogRepeatInterval)
}

// InternalIsLocal reports whether the internal listener is reachable only from this host.
func (s *PushAPIConfig) InternalIsLocal() bool {
	if strings.HasPrefix(s.InternalListen, "unix:") {
		return true
	}
	host, _, err := net.SplitHostPort(s.InternalListen)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// webhookURL returns the URL for one event type.
func (s *WebhookConfig) webhookURL(t EventType) *url.URL {
	var u *url.URL
	switch t {
	case EventOpen:
		u = s.WebhookOpenURL
	case EventMessage:
		u = s.WebhookMessageURL
	case EventClose:
		u = s.WebhookCloseURL
	}
	if u == nil {
		u = s.WebhookURL
	}
	return u
}

func (s *LimitConfig) limits() limits {
	return limits{MaxNameLen: s.MaxNameLength, MaxMetaSize: s.MaxMetaSize, MaxChannels: s.MaxChannels}
}

func checkHTTPURL(u *url.URL) error {
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("want an absolute http(s) URL, got %q", u.String())
	}
	return nil
}

// oneSecret merges a secret given directly and one read from a file; setting both is an error
// because one of them would be silently ignored.
func oneSecret(direct, fromFile string) (string, error) {
	// A value of only whitespace is a mistake (a quoted blank, an empty line in the file), and
	// reading it as unset would silently turn signing or the token off.
	if (direct != "" && strings.TrimSpace(direct) == "") || (fromFile != "" && strings.TrimSpace(fromFile) == "") {
		return "", errors.New("is set but blank (only whitespace)")
	}
	direct, fromFile = strings.TrimSpace(direct), strings.TrimSpace(fromFile)
	if direct != "" && fromFile != "" {
		return "", errors.New("set either the variable or its _FILE variant, not both")
	}
	return direct + fromFile, nil
}

// parseTrusted reads TRUSTED_PROXIES: CIDRs, or single addresses (a /32 or /128).
func parseTrusted(list []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, v := range list {
		v = strings.TrimSpace(v)
		if v == "" {
			continue
		}
		if p, err := netip.ParsePrefix(v); err == nil {
			out = append(out, p.Masked())
		} else if a, err := netip.ParseAddr(v); err == nil {
			out = append(out, netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()))
		} else {
			return nil, fmt.Errorf("%q is neither a CIDR (10.0.0.0/8) nor an address", v)
		}
	}
	return out, nil
}

// headerCanonical returns the canonical forms of configured header names.
func headerCanonical(names []string) []string {
	out := make([]string, 0, len(names))
	for _, n := range names {
		if n = strings.TrimSpace(n); n != "" {
			out = append(out, http.CanonicalHeaderKey(n))
		}
	}
	return out
}
