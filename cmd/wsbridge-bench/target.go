package main

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"syscall"
)

// checkLoopback refuses any URL whose host is not a loopback address. The tool opens tens of
// thousands of sockets and publishes flat out: pointed at a real host it would be an attack, so
// names other than "localhost" are not even resolved.
func checkLoopback(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("target %q: %w", raw, err)
	}
	host := u.Hostname()
	if host == "" {
		return fmt.Errorf("target %q has no host", raw)
	}
	if strings.EqualFold(host, "localhost") {
		return nil
	}
	ip := net.ParseIP(host)
	if ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("target %q: only loopback addresses (127.0.0.0/8, ::1, localhost) may be loaded", raw)
	}
	return nil
}

// sourceAddrs returns the local addresses clients dial from: one address per perAddr
// connections, over 127.0.0.1, 127.0.0.2, ... A TCP connection is named by its four-tuple, so
// every source address brings its own ~28,000 ephemeral ports toward the one bridge port. An
// IPv6 target gets ::1 only.
func sourceAddrs(target string, n, perAddr int) ([]net.IP, error) {
	u, err := url.Parse(target)
	if err != nil {
		return nil, err
	}
	if ip := net.ParseIP(u.Hostname()); ip != nil && ip.To4() == nil {
		return []net.IP{net.IPv6loopback}, nil
	}
	k := max(1, (n+perAddr-1)/perAddr)
	if k > 250 {
		return nil, errors.New("too many connections for 127.0.0.1-250")
	}
	out := make([]net.IP, k)
	for i := range out {
		out[i] = net.IPv4(127, 0, 0, byte(i+1))
	}
	return out, nil
}

// raiseFileLimit lifts RLIMIT_NOFILE so that n sockets fit, with room for the bridge's own
// webhook and API connections. Setting it explicitly (rather than relying on Go's automatic
// soft-limit raise) also makes child processes, the bridge among them, inherit it.
func raiseFileLimit(n int) (uint64, error) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0, err
	}
	want := uint64(2*n + 4096)
	if want > lim.Max {
		// Raising the hard limit needs CAP_SYS_RESOURCE; without it, settle for the hard limit.
		up := syscall.Rlimit{Cur: want, Max: want}
		if syscall.Setrlimit(syscall.RLIMIT_NOFILE, &up) == nil {
			return want, nil
		}
		want = lim.Max
	}
	lim.Cur = max(lim.Cur, want)
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0, err
	}
	return lim.Cur, nil
}
