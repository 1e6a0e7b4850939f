package bridge

import (
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
)

func TestReverseProxyToUpstream(t *testing.T) {
	t.Parallel()
	seen := make(chan *http.Request, 1)
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen <- r.Clone(r.Context())
		w.Header().Set("Set-Cookie", "PHPSESSID=s1")
		io.WriteString(w, "page "+r.URL.Path+"?"+r.URL.RawQuery)
	}))
	defer app.Close()
	up, _ := url.Parse(app.URL)
	b := newBridge(t, newFakePHP(t, acceptAll), func(c *Config) { c.Upstream = up })

	req, _ := http.NewRequest("GET", b.public.URL+"/chat/index.php?x=1", nil)
	req.Header.Set("Cookie", "PHPSESSID=s1")
	req.Header.Set("WsBridge-Event", "open")
	req.Header.Set("WsBridge-Signature", "t=1,v1=00")
	req.Header.Set("X-Forwarded-For", "198.51.100.7")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != "page /chat/index.php?x=1" || resp.Header.Get("Set-Cookie") != "PHPSESSID=s1" {
		t.Fatalf("proxied answer: %d %q %v", resp.StatusCode, body, resp.Header)
	}
	r := <-seen
	if r.Header.Get("Cookie") != "PHPSESSID=s1" {
		t.Errorf("cookie not passed: %v", r.Header)
	}
	for name := range r.Header {
		if strings.HasPrefix(strings.ToLower(name), "wsbridge-") {
			t.Errorf("client header %s reached the app", name)
		}
	}
	// The client's own X-Forwarded-For is not believed (no TRUSTED_PROXIES): the app sees the peer.
	if got := r.Header.Get("X-Forwarded-For"); got != "127.0.0.1" {
		t.Errorf("X-Forwarded-For = %q, want the peer's address alone", got)
	}
	if r.Header.Get("X-Forwarded-Host") != b.public.Listener.Addr().String() || r.Header.Get("X-Forwarded-Proto") != "http" {
		t.Errorf("X-Forwarded-Host/Proto = %q %q", r.Header.Get("X-Forwarded-Host"), r.Header.Get("X-Forwarded-Proto"))
	}
}

func TestProxyWithoutOrWithDeadUpstream(t *testing.T) {
	t.Parallel()
	none := newBridge(t, newFakePHP(t, acceptAll), nil)
	dead := httptest.NewServer(http.NotFoundHandler())
	up, _ := url.Parse(dead.URL)
	dead.Close()
	down := newBridge(t, newFakePHP(t, acceptAll), func(c *Config) { c.Upstream = up })
	for _, tc := range []struct {
		b    *testBridge
		want int
	}{{none, 404}, {down, 502}} {
		resp, err := http.Get(tc.b.public.URL + "/")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.want {
			t.Errorf("status %d, want %d", resp.StatusCode, tc.want)
		}
	}
}
