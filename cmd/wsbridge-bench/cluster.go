package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
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
	return "memory"
}
