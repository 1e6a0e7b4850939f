package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"github.com/wsbridge/wsbridge/bridge/testkit"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// app is one example app served by nginx, with its own wsbridge.
type app struct {
	name, root string
	url        string // http://127.0.0.1:port, what the browser opens
	secret     string
	bridge     *bridge
	params     map[string]string // fastcgi_params: the app's settings, read with getenv()
	internal   string            // its wsbridge's internal API address
	hookURL    string            // its wsbridge's WEBHOOK_URL
}

// hookPool is a php-fpm pool of its own for one app's webhooks (direct FastCGI), its settings
// as env[...] since no web server adds them as params.
type hookPool struct {
	name, sock string
	env        map[string]string
}

// TestBrowser runs the chat and notify examples as in production: nginx in front (pages and
// PHP through php-fpm, /ws proxied to wsbridge), webhooks from wsbridge to nginx, pushes from
// PHP to wsbridge's internal API. browser.mjs then drives Debian's chromium through them. The
// fastcgi variant sends the webhooks to php-fpm directly (a pool per app on a unix socket,
// its settings as env[...]), nginx serving only the pages.
func TestBrowser(t *testing.T) {
	for _, mode := range []string{"http", "fastcgi"} {
		t.Run(mode, func(t *testing.T) { runBrowser(t, mode == "fastcgi") })
	}
}

func runBrowser(t *testing.T, fastcgi bool) {
	nginx := testkit.RequireTool(t, "nginx", "nginx", "/usr/sbin/nginx")
	// Debian names the binary after the PHP version (php-fpm8.2) and keeps it in /usr/sbin.
	fpms, _ := filepath.Glob("/usr/sbin/php-fpm*")
	fpm := testkit.RequireTool(t, "php-fpm", append([]string{"php-fpm"}, fpms...)...)
	testkit.RequireTool(t, "php-cli", "php")
	node := testkit.RequireTool(t, "nodejs", "node")
	chromium := testkit.RequireTool(t, "chromium", "chromium", "/usr/bin/chromium")
	if _, err := os.Stat("node_modules/playwright-core/package.json"); err != nil {
		testkit.Missing(t, "playwright-core is not installed: run `npm ci` in examples/php/e2e")
	}

	dir := t.TempDir()
	for _, d := range []string{"sessions", "chat-data", "nginx-tmp"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	sock := filepath.Join(dir, "fpm.sock")

	apps := []*app{
		{name: "chat", root: filepath.Join(repoRoot, "examples/php/chat/public"), secret: "chat-secret",
			params: map[string]string{"CHAT_DATA_DIR": filepath.Join(dir, "chat-data")}},
		{name: "notify", root: filepath.Join(repoRoot, "examples/php/notify/public"), secret: "notify-secret",
			params: map[string]string{}},
	}
	const token = "e2e-api-token"
	// The apps' settings first: php-fpm's pools and nginx's config need the bridges' ports,
	// the bridges only port numbers (and, with FastCGI, a php-fpm to be ready for /readyz).
	var hookPools []hookPool
	for _, a := range apps {
		a.url = "http://" + testkit.FreeAddr(t)
		a.internal = testkit.FreeAddr(t)
		a.params["WSBRIDGE_WEBHOOK_SECRET"] = a.secret
		a.params["WSBRIDGE_API"] = "http://" + a.internal
		a.params["WSBRIDGE_API_TOKEN"] = token
		a.hookURL = a.url + "/webhook.php"
		if fastcgi {
			hs := filepath.Join(dir, a.name+"-hooks.sock")
			hookPools = append(hookPools, hookPool{name: a.name + "-hooks", sock: hs, env: a.params})
			a.hookURL = "fcgi+unix://" + hs + "?script=" + filepath.Join(a.root, "webhook.php")
		}
	}
	startFPM(t, fpm, dir, sock, hookPools)
	for _, a := range apps {
		a.bridge = startBridge(t, "wsbridge-"+a.name, map[string]string{
			"WSBRIDGE_INTERNAL_LISTEN": a.internal,
			"WSBRIDGE_WEBHOOK_URL":     a.hookURL,
			"WSBRIDGE_WEBHOOK_SECRET":  a.secret,
			"WSBRIDGE_API_TOKEN":       token,
			// As the docs say: at or below the FPM pool (pm.max_children = 4 below).
			"WSBRIDGE_WEBHOOK_CONCURRENCY": "3",
			// The notify page's SSE mode (?transport=sse) opens /events, and recovers what
			// was pushed while it was offline from the channel's history.
			"WSBRIDGE_SSE_PATH":     "/events",
			"WSBRIDGE_HISTORY_SIZE": "100",
		})
	}
	ng := startNginx(t, nginx, dir, sock, apps)
	for _, a := range apps {
		ng.waitHTTP(t, a.url+"/")
	}

	artifacts := os.Getenv("WSBRIDGE_ARTIFACTS")
	if artifacts == "" {
		artifacts = t.TempDir()
	} else if err := os.MkdirAll(artifacts, 0o755); err != nil {
		t.Fatal(err)
	}
	cliEnv, _ := json.Marshal(apps[1].params)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "browser.mjs")
	cmd.Env = append(os.Environ(),
		"CHAT_URL="+apps[0].url, "NOTIFY_URL="+apps[1].url, "NOTIFY_CLI_ENV="+string(cliEnv),
		"ARTIFACTS="+artifacts, "CHROMIUM="+chromium)
	// Setpgid + WaitDelay: a timeout kills node, and chromium with it is reaped via the group.
	out, err := cmd.CombinedOutput()
	t.Logf("browser.mjs:\n%s", out)
	if err != nil {
		t.Fatalf("browser.mjs: %v (screenshots in %s)", err, artifacts)
	}
	if !strings.Contains(string(out), " passed, 0 failed") {
		t.Fatal("browser.mjs did not report its checks")
	}
	if _, err := os.Stat(filepath.Join(artifacts, "chat.png")); err != nil {
		t.Errorf("no screenshot of the chat: %v", err)
	}
	t.Logf("screenshots: %s", artifacts)
}

// startFPM runs php-fpm in the foreground with one pool on a unix socket in dir, and a pool per
// hookPool.
func startFPM(t *testing.T, fpm, dir, sock string, hookPools []hookPool) {
	t.Helper()
	var user string
	if os.Geteuid() == 0 {
		user = "user = root\ngroup = root\n" // with -R below; FPM refuses root otherwise
	}
	conf := fmt.Sprintf(`[global]
pid = %[1]s/fpm.pid
error_log = %[1]s/fpm-error.log
daemonize = no

[app]
%[2]slisten = %[3]s
listen.mode = 0666
pm = static
pm.max_children = 4
catch_workers_output = yes
php_admin_value[session.save_path] = %[1]s/sessions
php_admin_value[error_log] = %[1]s/php-error.log
php_admin_flag[log_errors] = on
`, dir, user, sock)
	var pools strings.Builder
	for _, hp := range hookPools {
		fmt.Fprintf(&pools, `
[%[1]s]
%[2]slisten = %[3]s
listen.mode = 0666
pm = static
pm.max_children = 4
catch_workers_output = yes
php_admin_value[session.save_path] = %[4]s/sessions
php_admin_value[error_log] = %[4]s/php-error.log
php_admin_flag[log_errors] = on
`, hp.name, user, hp.sock, dir)
		for k, v := range hp.env {
			fmt.Fprintf(&pools, "env[%s] = %q\n", k, v)
		}
	}
	conf += pools.String()
	path := filepath.Join(dir, "php-fpm.conf")
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	p := start(t, "php-fpm", nil, fpm, "-R", "-F", "-y", path)
	t.Cleanup(func() {
		if t.Failed() {
			for _, f := range []string{"fpm-error.log", "php-error.log"} {
				b, _ := os.ReadFile(filepath.Join(dir, f))
				t.Logf("--- %s:\n%s", f, b)
			}
		}
	})
	for _, s := range append([]string{sock}, hookSocks(hookPools)...) {
		p.waitUntil(t, "socket "+s, func() error { _, err := os.Stat(s); return err })
	}
}

func hookSocks(pools []hookPool) []string {
	var socks []string
	for _, hp := range pools {
		socks = append(socks, hp.sock)
	}
	return socks
}

// startNginx runs nginx in the foreground with one server per app: static files and *.php
// through php-fpm, /ws and /events proxied to the app's wsbridge (the snippets docs/php.md shows).
func startNginx(t *testing.T, nginx, dir, sock string, apps []*app) *proc {
	t.Helper()
	var servers strings.Builder
	for _, a := range apps {
		var params strings.Builder
		for k, v := range a.params {
			fmt.Fprintf(&params, "            fastcgi_param %s %q;\n", k, v)
		}
		fmt.Fprintf(&servers, `
    server {
        listen %[1]s;
        root %[4]s;
        index index.php;

        location = /ws {
            proxy_pass http://%[2]s;
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection "upgrade";
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_read_timeout 1h;
        }
        location = /events {
            proxy_pass http://%[2]s;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_read_timeout 1h;
        }
        location ~ \.php$ {
            try_files $uri =404;
            include /etc/nginx/fastcgi_params;
            fastcgi_param SCRIPT_FILENAME $document_root$fastcgi_script_name;
%[3]s            fastcgi_pass unix:%[5]s;
        }
    }
`, strings.TrimPrefix(a.url, "http://"), a.bridge.public, params.String(), a.root, sock)
	}
	user := ""
	if os.Geteuid() == 0 {
		user = "user root;" // the workers must reach the FPM socket and the work tree
	}
	conf := fmt.Sprintf(`%[1]s
daemon off;
master_process on;
worker_processes 1;
pid %[2]s/nginx.pid;
error_log %[2]s/nginx-error.log;
events { worker_connections 256; }
http {
    access_log off;
    client_body_temp_path %[2]s/nginx-tmp/body;
    proxy_temp_path %[2]s/nginx-tmp/proxy;
    fastcgi_temp_path %[2]s/nginx-tmp/fastcgi;
    uwsgi_temp_path %[2]s/nginx-tmp/uwsgi;
    scgi_temp_path %[2]s/nginx-tmp/scgi;
    types { text/html html; text/css css; application/javascript js; image/png png; }
    default_type application/octet-stream;
%[3]s}
`, user, dir, servers.String())
	path := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	p := start(t, "nginx", nil, nginx, "-p", dir, "-c", path, "-e", filepath.Join(dir, "nginx-error.log"))
	t.Cleanup(func() {
		if t.Failed() {
			b, _ := os.ReadFile(filepath.Join(dir, "nginx-error.log"))
			t.Logf("--- nginx-error.log:\n%s", b)
		}
	})
	return p
}
