// Command wsbridge-bench loads a wsbridge on loopback and measures it: idle memory per
// connection, connect rate, broadcast fan-out, point-to-point pushes and the message webhook
// path. With -bridge it starts the wsbridge binary itself (and, with -php, nginx + php-fpm
// running a tiny webhook script; otherwise a trivial Go webhook handler in this process), runs
// one scenario and stops everything. docs/benchmarks.md has the commands and the figures.
//
// Every run is bounded: connection, message and duration flags have ceilings and -timeout ends
// the whole run. Only loopback targets are accepted.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"time"
)

type options struct {
	scenario    string
	target      string // targetWSBridge, or targetPushpin: the server under test (pushpin.go)
	bridgeBin   string
	wsURL       string
	apiURL      string
	hookURL     string
	pid         int
	php         bool
	fcgi        bool // with php: the bridge's webhooks go to php-fpm directly
	fpmChildren int
	hookConc    int
	conns       int
	counts      []int
	messages    int
	payload     int // broadcast: bytes of each message's data (0: just the stamp)
	rate        float64
	dialConc    int
	workers     int
	batch       int
	hookClients int
	duration    time.Duration
	drain       time.Duration
	timeout     time.Duration
	jsonPath    string
	bridgeEnv   []string
	cpus        cpuPlan
	nodes       int    // bridges started, one cluster (cluster.go of the tool)
	redisBin    string // redis-server to start as their broker; "": the memory broker
	natsBin     string // or nats-server (-nats), started with JetStream
}

// Ceilings that keep every run bounded whatever the flags say.
const (
	maxConns    = 50000
	maxSamples  = 20_000_000 // deliveries recorded in one phase
	maxDuration = time.Minute
	maxTimeout  = 10 * time.Minute
)

func main() {
	// An interrupted run still stops the bridge, nginx and php-fpm it started.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	opt, err := parseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "wsbridge-bench: %v\n", err)
		return 2
	}
	ctx, cancel := context.WithTimeout(ctx, opt.timeout)
	defer cancel()
	rep, err := runScenario(ctx, opt, stdout)
	if rep != nil && opt.jsonPath != "" {
		if jerr := writeJSON(opt.jsonPath, rep); jerr != nil {
			err = errors.Join(err, jerr)
		}
	}
	if err != nil {
		fmt.Fprintf(stderr, "wsbridge-bench: %v\n", err)
		return 1
	}
	return 0
}

func parseFlags(args []string, stderr io.Writer) (options, error) {
	var o options
	var counts string
	fs := flag.NewFlagSet("wsbridge-bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.scenario, "scenario", "", "idle, connect, broadcast, push or webhook")
	fs.StringVar(&o.target, "target", targetWSBridge, "the server under test: wsbridge (-bridge BINARY, or attach), or pushpin (Debian's, started by the tool in front of nginx + php-fpm running the same answers; idle, connect, broadcast and webhook)")
	fs.StringVar(&o.bridgeBin, "bridge", "", "wsbridge binary to start (go build -o bin/wsbridge ./cmd/wsbridge); or attach with -ws and -api")
	fs.StringVar(&o.wsURL, "ws", "", "attach: the bridge's WebSocket URL, e.g. ws://127.0.0.1:8080/ws (its webhook must answer like bench.php); comma-separated for the nodes of a cluster, clients spread over them")
	fs.IntVar(&o.nodes, "nodes", 1, "bridges to start as one cluster (more than 1 needs -redis); clients spread over them, pushes go to the first")
	fs.StringVar(&o.redisBin, "redis", "", "redis-server binary: start it on loopback (no persistence) and run the bridges with WSBRIDGE_BROKER=redis")
	fs.StringVar(&o.natsBin, "nats", "", "nats-server binary, instead of -redis: start it on loopback (JetStream, a temporary store) and run the bridges with WSBRIDGE_BROKER=nats")
	fs.StringVar(&o.apiURL, "api", "", "attach: the bridge's internal listener, e.g. http://127.0.0.1:8081")
	fs.StringVar(&o.hookURL, "hook", "", "attach: the webhook URL, for the wrk ceiling of -scenario webhook")
	fs.IntVar(&o.pid, "pid", 0, "attach: the bridge's pid, for -scenario idle")
	fs.BoolVar(&o.php, "php", false, "webhooks answered by nginx + php-fpm running bench.php (default: a trivial Go handler in this process)")
	fs.BoolVar(&o.fcgi, "fcgi", false, "with -php: the bridge sends its webhooks to php-fpm directly over FastCGI (fcgi+unix://), not through nginx; wrk's ceiling still goes through nginx")
	phpCPUs := fs.String("php-cpus", "", "with -php: run nginx and php-fpm on these CPUs (e.g. 0) and the bridge, this tool and wrk on the others")
	fs.IntVar(&o.fpmChildren, "fpm-children", 4, "php-fpm pm.max_children (static pool)")
	fs.IntVar(&o.hookConc, "hook-concurrency", 0, "WSBRIDGE_WEBHOOK_CONCURRENCY (default: -clients for -scenario webhook, -fpm-children for other scenarios with -php, else 64)")
	fs.IntVar(&o.conns, "n", 1000, "connections (connect, broadcast, push)")
	fs.StringVar(&counts, "counts", "1000,10000,19800", "idle: increasing connection counts at which memory is read")
	fs.IntVar(&o.messages, "m", 100, "broadcast: messages per phase (keep it below WSBRIDGE_SEND_QUEUE, 256, or flat out drops slow clients)")
	fs.IntVar(&o.payload, "payload", 0, "broadcast: pad each message to this many bytes of chat-like JSON (compressible, as an app's pushes are)")
	transport := fs.String("transport", "ws", "ws or sse: clients are WebSockets or Server-Sent Events streams (idle, connect, broadcast, push); with -ws when attaching, give the SSE URL, e.g. http://127.0.0.1:8080/events")
	fs.BoolVar(&pusherMode, "pusher", false, "clients speak the Pusher protocol on /app/{key} (pusher.go; with -bridge the bridge starts in Pusher mode; attach with -ws ws://…"+pusherPath+")")
	fs.BoolVar(&offerDeflate, "compression", false, "clients offer permessage-deflate (start the bridge with -bridge-env WSBRIDGE_COMPRESSION=on for it to be used)")
	fs.Float64Var(&o.rate, "rate", 20, "broadcast: the modest phase's messages per second")
	fs.IntVar(&o.dialConc, "dial-concurrency", 64, "dials in flight while connecting")
	fs.IntVar(&o.workers, "workers", 8, "push: push API requests in flight")
	fs.IntVar(&o.batch, "batch", 100, "push: publications per batch request")
	fs.IntVar(&o.hookClients, "clients", 8, "webhook: clients sending in a closed loop (and wrk's -c)")
	fs.DurationVar(&o.duration, "duration", 10*time.Second, "webhook: length of each measurement")
	fs.DurationVar(&o.drain, "drain", 30*time.Second, "longest wait for the deliveries of a phase")
	fs.DurationVar(&o.timeout, "timeout", 5*time.Minute, "the whole run's limit")
	fs.StringVar(&o.jsonPath, "json", "", "also write the results to this JSON file")
	fs.Func("bridge-env", "extra KEY=VALUE for the started bridge (repeatable), e.g. WSBRIDGE_SEND_QUEUE=64", func(s string) error {
		if !strings.HasPrefix(s, "WSBRIDGE_") && !strings.HasPrefix(s, "GO") {
			return errors.New("only WSBRIDGE_* and GO* variables")
		}
		o.bridgeEnv = append(o.bridgeEnv, s)
		return nil
	})
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	switch *transport {
	case "ws":
	case "sse":
		if o.scenario == "webhook" {
			return o, errors.New("-transport sse: an event stream sends nothing, so there is no webhook scenario for it")
		}
		useSSE = true
	default:
		return o, fmt.Errorf("-transport %q: use ws or sse", *transport)
	}
	var err error
	if o.counts, err = parseCounts(counts); err != nil {
		return o, err
	}
	if o.cpus, err = parseCPUPlan(*phpCPUs, runtime.NumCPU()); err != nil {
		return o, err
	}
	if o.cpus.php != "" && (!o.php || o.bridgeBin == "" && o.target != targetPushpin) {
		return o, errors.New("-php-cpus needs -php and -bridge (the tool starts PHP and the bridge itself)")
	}
	if err := checkTaskset(o.cpus); err != nil {
		return o, err
	}
	switch o.scenario {
	case "idle", "connect", "broadcast", "push", "webhook":
	default:
		return o, fmt.Errorf("-scenario %q: use idle, connect, broadcast, push or webhook", o.scenario)
	}
	if o.nodes < 1 || o.nodes > 8 {
		return o, errors.New("-nodes must be within 1..8")
	}
	engine := o.redisBin + o.natsBin
	if o.redisBin != "" && o.natsBin != "" {
		return o, errors.New("-redis or -nats, not both")
	}
	if (o.nodes > 1 || engine != "") && (o.bridgeBin == "" || engine == "") {
		return o, errors.New("-nodes above 1, -redis and -nats need -redis or -nats, and -bridge (the tool starts the cluster)")
	}
	switch o.target {
	case targetPushpin:
		if o.bridgeBin != "" || o.wsURL != "" || o.apiURL != "" {
			return o, errors.New("-target pushpin starts Pushpin itself: give neither -bridge nor -ws/-api")
		}
		if o.scenario == "push" {
			return o, errors.New("-target pushpin: the push scenario addresses wsbridge's connections and users, which Pushpin has no API for")
		}
		o.php = true // Pushpin's WebSocket-over-HTTP needs the origin: nginx + php-fpm
	case targetWSBridge:
		if (o.bridgeBin == "") == (o.wsURL == "" || o.apiURL == "") {
			return o, errors.New("give -bridge, or both -ws and -api (not both ways)")
		}
	default:
		return o, fmt.Errorf("-target %q: use wsbridge or pushpin", o.target)
	}
	for _, u := range append(strings.Split(o.wsURL, ","), o.apiURL, o.hookURL) {
		if u == "" {
			continue
		}
		if err := checkLoopback(u); err != nil {
			return o, err
		}
	}
	if o.fcgi && (!o.php || o.bridgeBin == "") {
		return o, errors.New("-fcgi needs -php and -bridge")
	}
	if o.hookConc == 0 {
		switch {
		case o.fcgi:
			// Every slot keeps a FastCGI connection, and a php-fpm child serves one connection
			// at a time: more slots than children would leave connections no child reads.
			o.hookConc = o.fpmChildren
			if o.scenario == "webhook" {
				o.hookConc = min(o.hookClients, o.fpmChildren)
			}
		case o.scenario == "webhook":
			// As many requests in flight to PHP as wrk's connections, so that the ceiling and
			// the bridge put the same queue in front of PHP-FPM.
			o.hookConc = o.hookClients
		case o.php:
			o.hookConc = o.fpmChildren
		default:
			o.hookConc = 64
		}
	}
	switch {
	case o.conns < 1 || o.conns > maxConns || o.counts[len(o.counts)-1] > maxConns:
		return o, fmt.Errorf("connections must be within 1..%d", maxConns)
	case o.messages < 1 || int64(o.messages)*int64(o.conns) > maxSamples:
		return o, fmt.Errorf("-m × -n must be within 1..%d", maxSamples)
	case o.duration <= 0 || o.duration > maxDuration, o.drain <= 0 || o.drain > maxDuration:
		return o, fmt.Errorf("-duration and -drain must be within 0..%s", maxDuration)
	case o.timeout <= 0 || o.timeout > maxTimeout:
		return o, fmt.Errorf("-timeout must be within 0..%s", maxTimeout)
	case o.dialConc < 1 || o.workers < 1 || o.batch < 1 || o.hookClients < 1 || o.hookClients > maxConns || o.rate <= 0:
		return o, errors.New("-dial-concurrency, -workers, -batch, -clients and -rate must be positive")
	}
	return o, nil
}

func runScenario(ctx context.Context, opt options, out io.Writer) (*Report, error) {
	biggest := opt.conns
	switch opt.scenario {
	case "idle":
		biggest = opt.counts[len(opt.counts)-1]
	case "webhook":
		biggest = opt.hookClients
	}
	limit, err := raiseFileLimit(biggest)
	if err != nil {
		return nil, fmt.Errorf("raise RLIMIT_NOFILE: %w", err)
	}
	// The bridge needs a descriptor per connection plus its listeners and webhook connections.
	if limit < uint64(biggest)+100 {
		return nil, fmt.Errorf("RLIMIT_NOFILE is %d, too low for %d connections (the bridge needs about 100 more); raise the hard limit or use fewer", limit, biggest)
	}
	e := &env{opt: opt, wsURL: opt.wsURL, apiURL: opt.apiURL, hookURL: opt.hookURL, pid: opt.pid, log: out,
		api: &http.Client{Transport: &http.Transport{Proxy: nil, MaxIdleConnsPerHost: opt.workers + 1}}}
	if opt.bridgeBin != "" || opt.target == targetPushpin {
		st, err := startStack(ctx, opt)
		if st != nil {
			defer st.stop()
		}
		if err != nil {
			if st != nil && st.stderr != nil {
				err = fmt.Errorf("%w\nbridge log:\n%s", err, st.stderr)
			}
			return nil, err
		}
		e.wsURL, e.apiURL, e.hookURL, e.pid, e.gc = strings.Join(st.WSURLs, ","), st.APIURL, st.HookURL, st.BridgePID, st.GC
		if len(st.WSURLs) == 0 {
			e.wsURL = st.WSURL // Pushpin: one front, not a list of bridges
		}
		e.pids, e.brokerPID = st.BridgePIDs, st.BrokerPID
		if useSSE {
			e.wsURL = strings.Join(st.SSEURLs, ",")
		}
		e.tree = st.tree
	}
	hook := "go"
	if opt.php {
		hook = "php"
	}
	rep := &Report{Scenario: opt.scenario, Target: opt.target, Hook: hook, Started: time.Now().UTC(), Options: map[string]any{
		"sse": useSSE,
		"n":   opt.conns, "counts": opt.counts, "m": opt.messages, "rate": opt.rate, "dial_concurrency": opt.dialConc,
		"workers": opt.workers, "batch": opt.batch, "clients": opt.hookClients, "duration": opt.duration.String(),
		"fpm_children": opt.fpmChildren, "fcgi": opt.fcgi, "hook_concurrency": opt.hookConc, "bridge_env": opt.bridgeEnv,
		"php_cpus": opt.cpus.php, "other_cpus": opt.cpus.rest, "nodes": opt.nodes, "broker": brokerName(opt),
	}}
	e.logf("wsbridge-bench %s against %s (clients: %s), webhooks answered by %s, RLIMIT_NOFILE %d", opt.scenario, opt.target, map[bool]string{false: "WebSocket", true: "SSE"}[useSSE], hook, limit)
	switch opt.scenario {
	case "idle":
		rep.Idle, err = runIdle(ctx, e)
	case "connect":
		rep.Connect, err = runConnect(ctx, e)
	case "broadcast":
		rep.Broadcast, err = runBroadcast(ctx, e)
	case "push":
		rep.Push, err = runPush(ctx, e)
	case "webhook":
		rep.Webhook, err = runWebhook(ctx, e)
	}
	return rep, err
}

// startStack starts what a self-contained run needs: the webhook endpoint, then the bridge.
func startStack(ctx context.Context, opt options) (*stack, error) {
	dir, err := os.MkdirTemp("", "wsbridge-bench")
	if err != nil {
		return nil, err
	}
	st := &stack{dir: dir, cpus: opt.cpus, fcgi: opt.fcgi}
	if opt.target == targetPushpin {
		st.script = "pushpin.php"
		err = st.startPHP(ctx, opt.fpmChildren)
		if err == nil {
			err = pinSelf(opt.cpus.rest)
		}
		if err == nil {
			err = st.startPushpin(ctx)
		}
		return st, err
	}
	if opt.php {
		err = st.startPHP(ctx, opt.fpmChildren)
		if err == nil {
			// PHP is on its CPUs; this tool, and with it the bridge and wrk it starts, goes to
			// the others.
			err = pinSelf(opt.cpus.rest)
		}
	} else {
		err = st.startHook()
	}
	var cluster []string
	if err == nil && opt.redisBin != "" {
		cluster, err = st.startRedis(ctx, opt.redisBin)
	}
	if err == nil && opt.natsBin != "" {
		cluster, err = st.startNATS(ctx, opt.natsBin)
	}
	for i := 0; err == nil && i < opt.nodes; i++ {
		env := opt.bridgeEnv
		if cluster != nil {
			env = append(slices.Clone(cluster), append([]string{fmt.Sprintf("WSBRIDGE_NODE_ID=b%d", i+1)}, env...)...)
		}
		err = st.startBridge(ctx, opt.bridgeBin, opt.hookConc, env)
	}
	return st, err
}
