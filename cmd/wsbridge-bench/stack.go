package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// benchHook is the trivial webhook endpoint: the same answers as bench.php, from Go, so that a
// run can tell the bridge's cost from PHP's.
func benchHook() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		var ev struct {
			Type         string  `json:"type"`
			ConnectionID string  `json:"connection_id"`
			Data         *string `json:"data"`
			Request      *struct {
				Query string `json:"query"`
			} `json:"request"`
		}
		if err == nil {
			err = json.Unmarshal(body, &ev)
		}
		if err != nil {
			http.Error(w, "bad event", http.StatusBadRequest)
			return
		}
		var reply any
		switch {
		case ev.Type == "open" && ev.Request != nil:
			q, _ := url.ParseQuery(ev.Request.Query)
			reply = map[string]any{"user_id": q.Get("u"), "join": []string{"bench"}, "send": []string{"id " + ev.ConnectionID}}
		case ev.Type == "message" && ev.Data != nil:
			reply = map[string]any{"send": []string{*ev.Data}}
		default:
			w.WriteHeader(http.StatusNoContent)
			return
		}
		b, _ := json.Marshal(reply)
		w.Header().Set("Content-Type", "application/json")
		w.Write(b)
	})
}

// benchPHP is the tiny PHP webhook: the same answers as benchHook.
const benchPHP = `<?php
$ev = json_decode(file_get_contents('php://input'), true);
switch ($ev['type']) {
    case 'open':
        parse_str($ev['request']['query'], $q);
        $r = ['user_id' => $q['u'] ?? '', 'join' => ['bench'], 'send' => ['id ' . $ev['connection_id']]];
        break;
    case 'message':
        $r = ['send' => [$ev['data']]];
        break;
    default:
        http_response_code(204);
        exit;
}
header('Content-Type: application/json');
echo json_encode($r);
`

// stack is what the tool started and must stop: the bridge, and nginx + php-fpm when PHP
// answers the webhooks.
type stack struct {
	dir     string
	procs   []*exec.Cmd // stopped in reverse order
	hookSrv *http.Server
	HookURL string // webhook URL through nginx: the bridge's, and wrk's
	// FCGIURL is bench.php straight at php-fpm's socket; with fcgi the bridge calls it.
	FCGIURL   string
	fcgi      bool
	WSURL     string
	SSEURL    string
	APIURL    string
	BridgePID int
	// WSURLs and BridgePIDs hold every bridge started (-nodes); the fields above are the
	// first's, where pushes go.
	WSURLs     []string
	SSEURLs    []string
	BridgePIDs []int
	BrokerPID  int // redis-server's, with -redis
	GC         *gcTrace
	stderr     *tail
	cpus       cpuPlan
	script     string // what nginx runs for every path: bench.php unless set (pushpin.php)
	tree       bool   // BridgePID is Pushpin's runner, measured with its children
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// startHook serves benchHook on loopback.
func (s *stack) startHook() error {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	s.hookSrv = &http.Server{Handler: benchHook()}
	go s.hookSrv.Serve(ln)
	s.HookURL = "http://" + ln.Addr().String() + "/hook"
	return nil
}

// startPHP starts php-fpm (a static pool of children) behind nginx, both on loopback in a
// temporary directory, serving bench.php for every path. nginx opens a FastCGI connection per
// request, as stock configurations do: with fastcgi_keep_conn each kept connection pins an FPM
// child, and more connections than children stall requests for hundreds of milliseconds.
func (s *stack) startPHP(ctx context.Context, children int) error {
	fpm, err := exec.LookPath("php-fpm8.2")
	if err != nil {
		if fpm, err = exec.LookPath("php-fpm"); err != nil {
			return errors.New("php-fpm not found: apt-get install php-fpm nginx")
		}
	}
	nginx, err := exec.LookPath("nginx")
	if err != nil {
		return errors.New("nginx not found: apt-get install nginx")
	}
	www := filepath.Join(s.dir, "www")
	if err := os.MkdirAll(filepath.Join(s.dir, "tmp"), 0o755); err != nil {
		return err
	}
	if err := os.MkdirAll(www, 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(www, "bench.php"), []byte(benchPHP), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(www, "pushpin.php"), []byte(pushpinPHP), 0o644); err != nil {
		return err
	}
	script := s.script
	if script == "" {
		script = "bench.php"
	}
	root := os.Geteuid() == 0
	sock := filepath.Join(s.dir, "fpm.sock")
	fpmConf := fmt.Sprintf(`[global]
error_log = %[1]s/fpm.log
daemonize = no
[bench]
listen = %[2]s
pm = static
pm.max_children = %[3]d
pm.max_requests = 0
`, s.dir, sock, children)
	if root {
		fpmConf += "user = root\ngroup = root\n"
	}
	// With -fcgi the bridge gets a pool of its own, of as many children, as docs/php.md
	// advises: its kept-alive connections hold their children while idle, and would leave
	// none to nginx for wrk's ceiling. Only one of the two pools is busy at a time.
	fcgiSock := filepath.Join(s.dir, "fpm-bridge.sock")
	if s.fcgi {
		fpmConf += fmt.Sprintf("[bridge]\nlisten = %s\npm = static\npm.max_children = %d\npm.max_requests = 0\n", fcgiSock, children)
		if root {
			fpmConf += "user = root\ngroup = root\n"
		}
	}
	if err := os.WriteFile(filepath.Join(s.dir, "fpm.conf"), []byte(fpmConf), 0o644); err != nil {
		return err
	}
	fpmArgs := []string{"--nodaemonize", "--fpm-config", filepath.Join(s.dir, "fpm.conf")}
	if root {
		fpmArgs = append(fpmArgs, "--allow-to-run-as-root")
	}
	if err := s.spawn(s.cpus.php, fpm, fpmArgs, nil, nil); err != nil {
		return err
	}

	port, err := freePort()
	if err != nil {
		return err
	}
	user := ""
	if root {
		user = "user root;"
	}
	conf := fmt.Sprintf(`daemon off;
%[4]s
worker_processes 1;
pid %[1]s/nginx.pid;
error_log %[1]s/nginx.err warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path %[1]s/tmp/body;
    fastcgi_temp_path %[1]s/tmp/fcgi;
    proxy_temp_path %[1]s/tmp/proxy;
    uwsgi_temp_path %[1]s/tmp/uwsgi;
    scgi_temp_path %[1]s/tmp/scgi;
    server {
        listen 127.0.0.1:%[3]d;
        keepalive_requests 1000000;
        location / {
            include /etc/nginx/fastcgi_params;
            fastcgi_param SCRIPT_FILENAME %[1]s/www/%[5]s;
            fastcgi_pass unix:%[2]s;
        }
    }
}
`, s.dir, sock, port, user, script)
	if err := os.WriteFile(filepath.Join(s.dir, "nginx.conf"), []byte(conf), 0o644); err != nil {
		return err
	}
	if err := s.spawn(s.cpus.php, nginx, []string{"-p", s.dir, "-c", filepath.Join(s.dir, "nginx.conf"), "-e", filepath.Join(s.dir, "nginx.err")}, nil, nil); err != nil {
		return err
	}
	s.HookURL = fmt.Sprintf("http://127.0.0.1:%d/%s", port, script)
	s.FCGIURL = "fcgi+unix://" + fcgiSock + "?script=" + filepath.Join(s.dir, "www", "bench.php")
	// Ready when a close event (204; pushpin.php: 200) comes back through nginx from PHP.
	return waitFor(ctx, func() bool {
		resp, err := http.Post(s.HookURL, "application/json", strings.NewReader(`{"type":"close"}`))
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusNoContent || script != "bench.php" && resp.StatusCode == http.StatusOK
	})
}

// startBridge runs the wsbridge binary on two free loopback ports with env added to the
// defaults, and GODEBUG=gctrace=1 so that the Go heap and stacks can be read off its stderr.
func (s *stack) startBridge(ctx context.Context, bin string, concurrency int, env []string) error {
	pub, err := freePort()
	if err != nil {
		return err
	}
	internal, err := freePort()
	if err != nil {
		return err
	}
	wsURL := fmt.Sprintf("ws://127.0.0.1:%d/ws", pub)
	if pusherMode {
		wsURL = fmt.Sprintf("ws://127.0.0.1:%d%s", pub, pusherPath)
		env = append(env, pusherEnv()...)
	}
	sseURL := fmt.Sprintf("http://127.0.0.1:%d/events", pub)
	apiURL := fmt.Sprintf("http://127.0.0.1:%d", internal)
	first := s.WSURL == ""
	if first {
		s.WSURL, s.SSEURL, s.APIURL = wsURL, sseURL, apiURL
	}
	s.SSEURLs = append(s.SSEURLs, sseURL)
	hook := s.HookURL
	if s.fcgi {
		hook = s.FCGIURL
	}
	e := append(os.Environ(),
		"GODEBUG=gctrace=1",
		fmt.Sprintf("WSBRIDGE_LISTEN=127.0.0.1:%d", pub),
		fmt.Sprintf("WSBRIDGE_INTERNAL_LISTEN=127.0.0.1:%d", internal),
		"WSBRIDGE_WEBHOOK_URL="+hook,
		"WSBRIDGE_SSE_PATH=/events",
		fmt.Sprintf("WSBRIDGE_WEBHOOK_CONCURRENCY=%d", concurrency),
		"WSBRIDGE_MAX_LIST_RESULT=100000",
		"WSBRIDGE_LOG_LEVEL=warn",
		"WSBRIDGE_SHUTDOWN_TIMEOUT=60s",
		// The webhook scenario's clients send as fast as PHP answers; the per-client rate limit
		// (100/s by default) would close them, and it is not what is measured here.
		"WSBRIDGE_MESSAGE_RATE=0",
		// Every load client dials from 127.0.0.1, hundreds at once: the per-address handshake
		// bound is for strangers, not for the load tool.
		"WSBRIDGE_MAX_PENDING_HANDSHAKES_PER_IP=0",
	)
	// The gc trace and the log tail follow the first bridge; the others' stderr is dropped.
	var stderr io.Writer = io.Discard
	if first {
		s.GC = &gcTrace{}
		s.stderr = &tail{}
		stderr = s.GC.watch(s.stderr)
	}
	if err := s.spawn(s.cpus.rest, bin, nil, append(e, env...), stderr); err != nil {
		return err
	}
	pid := s.procs[len(s.procs)-1].Process.Pid
	if first {
		s.BridgePID = pid
	}
	s.WSURLs, s.BridgePIDs = append(s.WSURLs, wsURL), append(s.BridgePIDs, pid)
	return waitFor(ctx, func() bool {
		resp, err := http.Get(apiURL + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
}

// spawn starts a child in a process group of its own (so that stop reaches its workers), on
// cpus when set.
func (s *stack) spawn(cpus, bin string, args, env []string, stderr io.Writer) error {
	name, args := pinned(cpus, bin, args...)
	cmd := exec.Command(name, args...)
	cmd.Env = env
	cmd.Stderr = stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", bin, err)
	}
	s.procs = append(s.procs, cmd)
	return nil
}

// stop ends what was started, newest first: SIGTERM, then SIGKILL after a bounded wait.
func (s *stack) stop() {
	for i := len(s.procs) - 1; i >= 0; i-- {
		cmd := s.procs[i]
		// Pushpin's runner puts each of its services in a process group of its own and stops
		// them on SIGTERM; any it leaves behind are ended by pid once it has exited.
		var kids []int
		if s.tree && cmd.Process.Pid == s.BridgePID {
			kids = children(cmd.Process.Pid)
			defer func() {
				for _, k := range kids {
					if pushpinService(k) { // still that process, not a pid used again
						syscall.Kill(k, syscall.SIGKILL)
					}
				}
			}()
		}
		syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(70 * time.Second):
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-done
		}
	}
	s.procs = nil
	if s.hookSrv != nil {
		s.hookSrv.Close()
	}
	if s.dir != "" {
		os.RemoveAll(s.dir)
	}
}

// waitFor polls ready until it holds, for at most 10 s.
func waitFor(ctx context.Context, ready func() bool) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for !ready() {
		select {
		case <-ctx.Done():
			return errors.New("service did not become ready within 10s")
		case <-time.After(20 * time.Millisecond):
		}
	}
	return nil
}

// rssKiB reads VmRSS of pid from /proc.
func rssKiB(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			return strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		}
	}
	return 0, errors.New("no VmRSS line")
}

// bytesWritten reads the bytes pid has written with write system calls (wchar in
// /proc/PID/io), sockets included; 0 when unknown.
func bytesWritten(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/io", pid))
	if pid == 0 || err != nil {
		return 0
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "wchar: "); ok {
			n, _ := strconv.ParseInt(v, 10, 64)
			return n
		}
	}
	return 0
}

// cpuSeconds reads the user + system CPU time pid has used, from /proc/PID/stat (fields 14
// and 15, in clock ticks of 1/100 s, USER_HZ on Linux).
func cpuSeconds(pid int) float64 {
	u, st := cpuSplit(pid)
	return u + st
}

// cpuSplit is cpuSeconds as user and system time.
func cpuSplit(pid int) (user, system float64) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0
	}
	// The command name (field 2) may hold spaces; the fields after its closing ")" do not.
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	if len(f) < 13 {
		return 0, 0
	}
	u, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	return u / 100, st / 100
}

// gcTrace keeps the last line GODEBUG=gctrace=1 printed: the live heap after marking and the
// stack bytes scanned, in MB, as the runtime itself counts them.
type gcTrace struct {
	mu     sync.Mutex
	n      int
	liveMB int64
	stkMB  int64
}

var gcLine = regexp.MustCompile(`\d+->\d+->(\d+) MB, \d+ MB goal, (\d+) MB stacks`)

// watch returns a writer for the bridge's stderr that records gc lines and keeps the rest in t.
func (g *gcTrace) watch(t *tail) io.Writer {
	r, w := io.Pipe()
	go func() {
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			m := gcLine.FindStringSubmatch(sc.Text())
			if m == nil {
				t.add(sc.Text())
				continue
			}
			live, _ := strconv.ParseInt(m[1], 10, 64)
			stk, _ := strconv.ParseInt(m[2], 10, 64)
			g.mu.Lock()
			g.n, g.liveMB, g.stkMB = g.n+1, live, stk
			g.mu.Unlock()
		}
		io.Copy(io.Discard, r)
	}()
	return w
}

func (g *gcTrace) last() (n int, liveMB, stacksMB int64) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.n, g.liveMB, g.stkMB
}

// tail keeps the bridge's last log lines for error reports.
type tail struct {
	mu    sync.Mutex
	lines []string
}

func (t *tail) add(l string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.lines = append(t.lines, l)
	if len(t.lines) > 20 {
		t.lines = t.lines[1:]
	}
}

func (t *tail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return strings.Join(t.lines, "\n")
}
