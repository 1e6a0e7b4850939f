// Command wsbridge holds browsers' WebSocket connections for a PHP application: it turns each
// connection's life into signed webhooks to PHP and lets PHP push back through an internal HTTP
// API. It is configured with WSBRIDGE_* environment variables only; `wsbridge -h` lists them.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/wsbridge/wsbridge/bridge"
	"github.com/wsbridge/wsbridge/bridge/natsbroker"
	"github.com/wsbridge/wsbridge/bridge/redisbroker"
)

func main() {
	os.Exit(run(os.Args[1:], os.Environ(), os.Stderr))
}

// run returns the exit status: 0 after a clean shutdown, 1 when serving failed, 2 for a bad
// configuration or command line.
func run(args, environ []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("wsbridge", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, "Usage: wsbridge\n\nwsbridge takes no arguments; it is configured with these environment variables:\n\n")
		fmt.Fprint(stderr, bridge.ConfigUsage())
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "wsbridge takes no arguments (got %q); see wsbridge -h\n", fs.Args())
		return 2
	}

	cfg, err := bridge.LoadConfig(environ)
	if err != nil {
		fmt.Fprintf(stderr, "wsbridge: %v\n", err)
		return 2
	}
	// Every line of the process goes through the throttle (net/http's error logs too, via the
	// server's logger): a flood of clients must not flood the logs. Flush writes the counts of
	// what is still held back before the process exits.
	throttle := bridge.NewLogThrottle(slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: logLevel(cfg.LogLevel)}),
		cfg.LogRepeatLimit, cfg.LogRepeatInterval)
	defer throttle.Flush()
	log := slog.New(throttle)

	public, err := bridge.Listen(cfg.Listen)
	if err != nil {
		log.Error("cannot listen", "addr", cfg.Listen, "err", err)
		return 1
	}
	internal, err := bridge.Listen(cfg.InternalListen)
	if err != nil {
		public.Close()
		log.Error("cannot listen", "addr", cfg.InternalListen, "err", err)
		return 1
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	go func() {
		<-ctx.Done()
		stop() // a second signal ends the process at once
	}()
	broker, err := newBroker(cfg, log)
	if err != nil {
		public.Close()
		internal.Close()
		log.Error("cannot start the broker", "broker", cfg.Broker, "err", err)
		return 1
	}
	if c, ok := broker.(io.Closer); ok {
		defer c.Close() // after Serve, which has stopped the broker's Run
	}
	if err := bridge.New(cfg, log, broker).Serve(ctx, public, internal); err != nil {
		log.Error("stopped with error", "err", err)
		return 1
	}
	log.Info("stopped")
	return 0
}

func logLevel(s string) slog.Level {
	var l slog.Level
	if err := l.UnmarshalText([]byte(strings.ToUpper(s))); err != nil {
		return slog.LevelInfo
	}
	return l
}

// newBroker builds the broker WSBRIDGE_BROKER names. Each cluster broker is a package of its
// own (bridge/redisbroker, bridge/natsbroker) picked here, so bridge never imports them.
func newBroker(cfg bridge.Config, log *slog.Logger) (bridge.Broker, error) {
	switch cfg.Broker {
	case "memory":
		return bridge.NewMemoryBroker(), nil
	case "redis":
		return redisbroker.New(redisbroker.Options{URL: cfg.RedisURL, Prefix: cfg.ClusterPrefix, HistorySize: cfg.HistorySize, HistoryTTL: cfg.HistoryTTL, Log: log})
	case "nats":
		return natsbroker.New(natsbroker.Options{URL: cfg.NatsURL, Prefix: cfg.ClusterPrefix,
			NodeTimeout: cfg.NodeTimeout, Log: log})
	}
	return nil, fmt.Errorf("unknown broker %q", cfg.Broker)
}
