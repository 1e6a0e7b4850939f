package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// startRedis starts redis-server on a free loopback port without persistence, as the broker
// of the bridges this run starts, and returns their WSBRIDGE_* variables for it.
func (s *stack) startRedis(ctx context.Context, bin string) ([]string, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	addr := "127.0.0.1:" + strconv.Itoa(port)
	if err := s.spawn(s.cpus.rest, bin, []string{"--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"}, nil, io.Discard); err != nil {
		return nil, err
	}
	s.BrokerPID = s.procs[len(s.procs)-1].Process.Pid
	if err := waitFor(ctx, func() bool { return redisPing(addr) == nil }); err != nil {
		return nil, fmt.Errorf("redis-server at %s: %w", addr, err)
	}
	return []string{"WSBRIDGE_BROKER=redis", "WSBRIDGE_REDIS_URL=redis://" + addr + "/0", "WSBRIDGE_CLUSTER_PREFIX=bench"}, nil
}

func redisPing(addr string) error {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Second))
	if _, err := io.WriteString(c, "PING\r\n"); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if strings.TrimSpace(line) != "+PONG" {
		return fmt.Errorf("PING answered %q", line)
	}
	return nil
}

// brokerName is what the report calls the run's broker.
func brokerName(opt options) string {
	if opt.redisBin != "" {
		return "redis"
	}
	if opt.natsBin != "" {
		return "nats"
	}
	return "memory"
}

// startNATS starts nats-server with JetStream (its store in the run's directory) on a free
// loopback port, as the broker of the bridges this run starts, and returns their WSBRIDGE_*
// variables for it.
func (s *stack) startNATS(ctx context.Context, bin string) ([]string, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	addr := "127.0.0.1:" + strconv.Itoa(port)
	store := filepath.Join(s.dir, "nats")
	if err := s.spawn(s.cpus.rest, bin, []string{"-a", "127.0.0.1", "-p", strconv.Itoa(port), "-js", "-sd", store}, nil, io.Discard); err != nil {
		return nil, err
	}
	s.BrokerPID = s.procs[len(s.procs)-1].Process.Pid
	// Accepting connections is not enough: JetStream must be up for the nodes' buckets.
	if err := waitFor(ctx, func() bool { return natsJetStream(addr) == nil }); err != nil {
		return nil, fmt.Errorf("nats-server at %s: %w", addr, err)
	}
	return []string{"WSBRIDGE_BROKER=nats", "WSBRIDGE_NATS_URL=nats://" + addr, "WSBRIDGE_CLUSTER_PREFIX=bench"}, nil
}

// natsJetStream asks the server for its JetStream account info in the plain protocol: an
// answer that is not an error means JetStream is up.
func natsJetStream(addr string) error {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Second))
	r := bufio.NewReader(c)
	if _, err := r.ReadString('\n'); err != nil { // INFO
		return err
	}
	if _, err := io.WriteString(c, "CONNECT {\"verbose\":false,\"headers\":true,\"no_responders\":true}\r\nSUB _INBOX.bench 1\r\nPUB $JS.API.INFO _INBOX.bench 0\r\n\r\nPING\r\n"); err != nil {
		return err
	}
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return err
		}
		switch {
		case strings.HasPrefix(line, "HMSG"):
			return errors.New("no JetStream yet (no responders)")
		case strings.HasPrefix(line, "MSG"):
			body, err := r.ReadString('\n')
			if err != nil {
				return err
			}
			if strings.Contains(body, `"error"`) {
				return fmt.Errorf("JetStream: %s", strings.TrimSpace(body))
			}
			return nil
		case strings.HasPrefix(line, "-ERR"):
			return errors.New(strings.TrimSpace(line))
		}
	}
}
