package main

import (
	"context"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/wsbridge/wsbridge/bridge/testkit"
)

// TestTargetFlags: -target pushpin starts Pushpin itself and refuses what would not measure it.
func TestTargetFlags(t *testing.T) {
	for _, tc := range []struct {
		name    string
		args    []string
		wantErr string
	}{
		{"pushpin idle", []string{"-target", "pushpin", "-scenario", "idle"}, ""},
		{"pushpin with a bridge binary", []string{"-target", "pushpin", "-scenario", "connect", "-bridge", "bin/wsbridge"}, "neither -bridge"},
		{"pushpin push", []string{"-target", "pushpin", "-scenario", "push"}, "no API for"},
		{"unknown target", []string{"-target", "centrifugo", "-scenario", "idle", "-bridge", "x"}, `use wsbridge or pushpin`},
		{"wsbridge needs a binary", []string{"-scenario", "idle"}, "give -bridge"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o, err := parseFlags(tc.args, io.Discard)
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.wantErr == "" && !o.php:
				t.Error("-target pushpin without the PHP origin")
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Fatalf("err %v, want one saying %q", err, tc.wantErr)
			}
		})
	}
}

// TestScenariosAgainstPushpin runs the connect, broadcast, webhook and idle scenarios against
// Debian's Pushpin in front of nginx + php-fpm, all started and stopped by the tool: every
// client gets its id frame, every broadcast reaches every client, echoes come back, and
// Pushpin's processes are measured.
func TestScenariosAgainstPushpin(t *testing.T) {
	testkit.RequireTool(t, "pushpin", "pushpin")
	testkit.RequireTool(t, "nginx", "nginx", "/usr/sbin/nginx")
	testkit.RequireTool(t, "php-fpm", "php-fpm8.2", "php-fpm", "/usr/sbin/php-fpm8.2")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	run := func(args ...string) *Report {
		t.Helper()
		opt, err := parseFlags(append([]string{"-target", "pushpin", "-fpm-children", "2", "-drain", "20s"}, args...), io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		var log strings.Builder
		rep, err := runScenario(ctx, opt, &log)
		if err != nil {
			t.Fatalf("%v: %v\n%s", args, err, log.String())
		}
		return rep
	}
	if c := run("-scenario", "connect", "-n", "20", "-dial-concurrency", "4").Connect; c.Conns != 20 || c.Handshake.N != 20 {
		t.Errorf("connect: %+v", c)
	}
	b := run("-scenario", "broadcast", "-n", "20", "-m", "5", "-rate", "50").Broadcast
	// Pushpin registers a connection's GRIP subscription after the client already has its id
	// frame (the handler learns it over ZeroMQ), and it offers no way to know when: the first
	// publication of the first phase may miss some of the 20 clients. From then on every
	// publication must reach every client.
	for i, p := range b.Phases {
		lost := p.Expected - p.Delivered
		if p.Expected != 100 || lost < 0 || (i == 0 && lost > 20) || (i > 0 && lost != 0) {
			t.Errorf("broadcast phase %q: %d of %d delivered; want 100 of 100 (the first phase: at least 80)", p.Name, p.Delivered, p.Expected)
		}
	}
	w := run("-scenario", "webhook", "-clients", "2", "-duration", "300ms").Webhook
	if w.Bridge.Messages == 0 || int64(w.Bridge.LatencyMS.N) != w.Bridge.Messages {
		t.Errorf("webhook: %d echoes, %d latencies; want equal and above zero", w.Bridge.Messages, w.Bridge.LatencyMS.N)
	}
	// Pushpin spends about a millisecond of CPU per message here, over several processes:
	// hundreds of messages are well past the 10 ms that /proc counts in.
	if w.Bridge.BridgeCPUus <= 0 {
		t.Errorf("webhook: Pushpin's CPU per message is %.1f µs; its processes were not measured", w.Bridge.BridgeCPUus)
	}
	idle := run("-scenario", "idle", "-counts", "50").Idle
	if len(idle.Points) != 1 || idle.BaselineRSSKiB < 1024 {
		t.Errorf("idle: %+v; want one point over Pushpin's processes' RSS (MBs)", idle)
	}
}
