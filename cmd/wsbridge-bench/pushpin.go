package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
)

// Pushpin (Debian's pushpin package, 1.36) is the server wsbridge is measured against with
// -target pushpin: the same clients, the same nginx + php-fpm, and pushpinPHP, which answers
// Pushpin's WebSocket-over-HTTP requests (GRIP) the way bench.php answers wsbridge's webhooks:
// open subscribes the connection to channel "bench" and sends it "id <connection id>", a
// message is echoed back. Broadcasts go through Pushpin's own publish API (POST /publish/).
// The tool starts Pushpin itself, with its own configuration, run and log directories and free
// loopback ports, and stops it by its pid.

// pushpinPHP is bench.php in Pushpin's WebSocket-over-HTTP form. A request carries one or
// more events, "TYPE[ hexlen]\r\n[payload\r\n]"; what goes to the client is prefixed "m:", and
// "c:" is a GRIP control message (once the answer says Sec-WebSocket-Extensions: grip).
const pushpinPHP = `<?php
$in = file_get_contents('php://input');
$id = $_SERVER['HTTP_CONNECTION_ID'] ?? '';
$out = '';
$ev = function ($type, $payload = null) {
    return $payload === null ? "$type\r\n" : $type . ' ' . dechex(strlen($payload)) . "\r\n" . $payload . "\r\n";
};
for ($p = 0, $n = strlen($in); $p < $n;) {
    $e = strpos($in, "\r\n", $p);
    if ($e === false) { break; }
    $line = substr($in, $p, $e - $p);
    $p = $e + 2;
    $sp = strpos($line, ' ');
    $type = $sp === false ? $line : substr($line, 0, $sp);
    $payload = null;
    if ($sp !== false) {
        $len = hexdec(substr($line, $sp + 1));
        $payload = substr($in, $p, $len);
        $p += $len + 2;
    }
    switch ($type) {
        case 'OPEN':
            $out .= $ev('OPEN');
            $out .= $ev('TEXT', 'c:' . json_encode(['type' => 'subscribe', 'channel' => 'bench']));
            $out .= $ev('TEXT', 'm:id ' . $id);
            break;
        case 'TEXT':
            $out .= $ev('TEXT', 'm:' . $payload);
            break;
        case 'CLOSE':
            $out .= $ev('CLOSE', $payload);
            break;
    }
}
header('Content-Type: application/websocket-events');
header('Sec-WebSocket-Extensions: grip');
echo $out;
`

// pushpinConf is Pushpin's configuration for a run: Debian's defaults, with every port, path
// and the IPC prefix the tool's own, zurl (Pushpin's HTTP client to the origin) started by
// Pushpin's runner rather than expected as a system service, and the handler's message rate
// limit (2,500/s by default) out of the way of a broadcast to thousands.
const pushpinConf = `[global]
include=/usr/lib/pushpin/internal.conf
rundir=%[1]s/run
ipc_prefix=bench-
port_offset=0
stats_connection_ttl=120
[runner]
services=condure,zurl,pushpin-proxy,pushpin-handler
http_port=127.0.0.1:%[2]d
logdir=%[1]s/log
log_level=1
client_buffer_size=8192
client_maxconn=60000
condure_bin=condure
zurl_bin=zurl
[proxy]
routesfile=%[1]s/routes
zurl_out_specs=ipc://{rundir}/{ipc_prefix}zurl-in
zurl_out_stream_specs=ipc://{rundir}/{ipc_prefix}zurl-in-stream
zurl_in_specs=ipc://{rundir}/{ipc_prefix}zurl-out
debug=false
auto_cross_origin=false
accept_x_forwarded_protocol=false
set_x_forwarded_protocol=proto-only
x_forwarded_for=
x_forwarded_for_trusted=
orig_headers_need_mark=
accept_pushpin_route=false
log_from=false
log_user_agent=false
sig_iss=pushpin
sig_key=wsbridge-bench
upstream_key=
updates_check=off
organization_name=
[handler]
push_in_spec=tcp://127.0.0.1:%[3]d
push_in_sub_specs=tcp://127.0.0.1:%[4]d
push_in_sub_connect=false
push_in_http_addr=127.0.0.1
push_in_http_port=%[5]d
push_in_http_max_headers_size=10000
push_in_http_max_body_size=1000000
stats_spec=ipc://{rundir}/{ipc_prefix}stats
command_spec=tcp://127.0.0.1:%[6]d
message_rate=10000000
message_hwm=10000000
message_wait=5000
id_cache_ttl=60
connection_subscription_max=20
subscription_linger=60
stats_subscription_ttl=60
stats_report_interval=10
stats_format=tnetstring
`

// startPushpin starts Pushpin in front of the PHP started with pushpinPHP (startPHP).
func (s *stack) startPushpin(ctx context.Context) error {
	bin, err := exec.LookPath("pushpin")
	if err != nil {
		return errors.New("pushpin is not installed (apt-get install pushpin): -target pushpin needs it")
	}
	var ports [5]int
	for i := range ports {
		if ports[i], err = freePort(); err != nil {
			return err
		}
	}
	dir := filepath.Join(s.dir, "pushpin")
	for _, d := range []string{"run", "log"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return err
		}
	}
	origin := strings.TrimPrefix(s.HookURL, "http://")
	origin = origin[:strings.IndexByte(origin, '/')]
	if err := os.WriteFile(filepath.Join(dir, "routes"), []byte("* "+origin+",over_http\n"), 0o644); err != nil {
		return err
	}
	conf := filepath.Join(dir, "pushpin.conf")
	if err := os.WriteFile(conf, fmt.Appendf(nil, pushpinConf, dir, ports[0], ports[1], ports[2], ports[3], ports[4]), 0o644); err != nil {
		return err
	}
	s.stderr = &tail{} // Pushpin logs to its log directory
	if err := s.spawn(s.cpus.rest, bin, []string{"--config", conf}, os.Environ(), nil); err != nil {
		return err
	}
	s.BridgePID = s.procs[len(s.procs)-1].Process.Pid
	s.tree = true
	s.WSURL = fmt.Sprintf("ws://127.0.0.1:%d/ws", ports[0])
	s.APIURL = fmt.Sprintf("http://127.0.0.1:%d", ports[3])
	// Ready when the publish API takes an empty publish and the public port reaches PHP.
	return waitFor(ctx, func() bool {
		resp, err := http.Post(s.APIURL+"/publish/", "application/json", strings.NewReader(`{"items":[]}`))
		if err != nil {
			return false
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return false
		}
		resp, err = http.Get(strings.Replace(s.WSURL, "ws://", "http://", 1))
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
}

// children lists the processes whose parent is pid (Pushpin's runner starts condure, zurl,
// pushpin-proxy and pushpin-handler, each in a process group of its own).
func children(pid int) []int {
	ents, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range ents {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p))
		if err != nil {
			continue
		}
		f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
		if len(f) > 1 && f[1] == strconv.Itoa(pid) {
			out = append(out, p)
		}
	}
	return out
}

// treeOf is pid and its children.
func treeOf(pid int) []int { return append([]int{pid}, children(pid)...) }

// publishBody is one broadcast of data to channel "bench" as the target's publish API takes it.
func (e *env) publishBody(data string) []byte {
	if e.opt.target == targetPushpin {
		return fmt.Appendf(nil, `{"items":[{"channel":"bench","formats":{"ws-message":{"content":%q}}}]}`, data)
	}
	return fmt.Appendf(nil, `{"to":{"channels":["bench"]},"data":%q}`, data)
}

// publishPath is where the target's publish API takes publishBody's bodies.
func (e *env) publishPath() string {
	if e.opt.target == targetPushpin {
		return "/publish/"
	}
	return "/v1/publish"
}

// wrkBody is the request wrk posts to the script for the ceiling: what the target sends PHP for
// one client message, with its content type.
func (e *env) wrkBody(data string) (body, contentType string) {
	if e.opt.target == targetPushpin {
		return fmt.Sprintf("TEXT %x\r\n%s\r\n", len(data), data), "application/websocket-events"
	}
	return fmt.Sprintf(`{"type":"message","event_id":"ABCDEFGHIJKLMNOPQRSTUVWXYZ","connection_id":"benchnode.ABCDEFGHIJKLMNOP","user_id":"u1","meta":null,"channels":["bench"],"time":"2026-01-01T00:00:00.000Z","data":%q,"binary":false,"seq":1}`, data), "application/json"
}

// cpuTree, rssTree and writtenTree are cpuSeconds, rssKiB and bytesWritten of the server under
// test: the bridge's process, or Pushpin's runner with its children.
func (e *env) cpuTree() float64 {
	var sum float64
	for _, p := range e.procs() {
		sum += cpuSeconds(p)
	}
	return sum
}

// sysTree is the system (kernel) part of cpuTree.
func (e *env) sysTree() float64 {
	var sum float64
	for _, p := range e.procs() {
		_, st := cpuSplit(p)
		sum += st
	}
	return sum
}

func (e *env) rssTree() (int64, error) {
	var sum int64
	for _, p := range e.procs() {
		n, err := rssKiB(p)
		if err != nil {
			return 0, err
		}
		sum += n
	}
	return sum, nil
}

func (e *env) writtenTree() int64 {
	var sum int64
	for _, p := range e.procs() {
		sum += bytesWritten(p)
	}
	return sum
}

func (e *env) procs() []int {
	if e.tree {
		return treeOf(e.pid)
	}
	return []int{e.pid}
}

const (
	targetWSBridge = "wsbridge"
	targetPushpin  = "pushpin"
)

// pushpinService reports whether pid is one of the services Pushpin's runner starts.
func pushpinService(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	if err != nil {
		return false
	}
	switch strings.TrimSpace(string(b)) {
	case "condure", "zurl", "pushpin-proxy", "pushpin-handler":
		return true
	}
	return false
}
