package bridge

import (
	"errors"
	"io"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"path"
	"strings"
	"sync/atomic"
	"time"
)

// PublicHandler serves the public listener: the WebSocket endpoints, and everything else
// reverse-proxied to UPSTREAM so that the browser sees one origin and PHP session cookies work
// for both pages and sockets.
func (s *Server) PublicHandler() http.Handler {
	mux := http.NewServeMux()
	for _, p := range s.cfg.WSPaths {
		mux.HandleFunc(p, s.serveWS)
	}
	if s.pusher != nil {
		mux.HandleFunc("/app/{key}", s.servePusher)
	}
	if s.cfg.Upstream != nil {
		mux.Handle("/", s.refuseWebhookPaths(s.bodyIdleTimeout(s.reverseProxy())))
	} else {
		mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
			http.Error(w, "not found (wsbridge has no WSBRIDGE_UPSTREAM to proxy to)", http.StatusNotFound)
		})
	}
	return mux
}

// refuseWebhookPaths answers 403 to requests for the paths of the webhook URLs, whatever host
// they name: the app's webhook endpoint is often the upstream itself, and a request forwarded
// there would be a forged event (unsigned webhooks, or a replay attempt) coming from the bridge's
// own address. Paths are compared cleaned and case-insensitively, with whatever follows them
// (PATH_INFO), so that no spelling of the path gets through.
func (s *Server) refuseWebhookPaths(next http.Handler) http.Handler {
	var hooks []string
	for _, u := range []*url.URL{s.cfg.WebhookURL, s.cfg.WebhookOpenURL, s.cfg.WebhookMessageURL, s.cfg.WebhookCloseURL} {
		if u == nil {
			continue
		}
		if p := cleanPath(u.Path); p != "/" {
			hooks = append(hooks, p)
		} else {
			// Refusing "/" would refuse the whole app; only the signature protects it then.
			s.log.Warn("the webhook URL's path is /: the reverse proxy cannot keep clients from it, so PHP must verify WsBridge-Signature", "webhook_host", u.Host)
		}
	}
	if len(hooks) == 0 {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p := cleanPath(r.URL.Path)
		for _, h := range hooks {
			if p == h || strings.HasPrefix(p, h+"/") {
				http.Error(w, "forbidden: this path receives the bridge's webhooks and is not served to clients", http.StatusForbidden)
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

// cleanPath is p as compared with the webhook paths: rooted, cleaned, lower case.
func cleanPath(p string) string {
	return strings.ToLower(path.Clean("/" + p))
}

func (s *Server) reverseProxy() http.Handler {
	target := s.cfg.Upstream
	return &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
			// Keep the part of the chain of proxies in front of this one that TRUSTED_PROXIES
			// vouches for, and append the peer's address, as nginx's
			// $proxy_add_x_forwarded_for does and as the open webhook reports it. Rewrite has
			// already removed the client's X-Forwarded-* from Out.
			cl := s.clientOf(pr.In)
			if cl.chain != "" {
				pr.Out.Header.Set("X-Forwarded-For", cl.chain)
			}
			if h := s.cfg.ClientIPHeader; h != "" && !cl.trusted {
				pr.Out.Header.Del(h) // a client's claim about its own address
			}
			pr.SetXForwarded()
			// A client must not be able to pose as the bridge to the app's webhook endpoint.
			for name := range pr.Out.Header {
				if strings.HasPrefix(strings.ToLower(name), "wsbridge-") {
					pr.Out.Header.Del(name)
				}
			}
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			if b, ok := r.Body.(*idleBody); ok && b.stalled.Load() {
				s.log.Warn("proxy: client stopped sending its request body", "path", r.URL.Path, "client", s.clientIP(r), "idle", s.cfg.ProxyBodyIdleTimeout.String())
				http.Error(w, "request body not sent in time", http.StatusRequestTimeout)
				return
			}
			s.log.Error("proxy: upstream failed", "path", r.URL.Path, "err", err)
			http.Error(w, "the application is unavailable", http.StatusBadGateway)
		},
	}
}

// bodyIdleTimeout bounds the pause between two reads of a proxied request's body by
// PROXY_BODY_IDLE_TIMEOUT. A total ReadTimeout would cut slow but steady uploads; without any
// bound, a client that sends its headers and then dribbles (or stops) holds a connection here and
// a worker at the app for ever.
func (s *Server) bodyIdleTimeout(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Body != nil && r.Body != http.NoBody && r.ContentLength != 0 {
			r.Body = &idleBody{ReadCloser: r.Body, rc: http.NewResponseController(w), idle: s.cfg.ProxyBodyIdleTimeout}
		}
		next.ServeHTTP(w, r)
	})
}

// idleBody re-arms the connection's read deadline before each read of the body. Once the body
// has been read to its end the deadline is cleared: net/http then reads in the background to
// notice a client that leaves, and a deadline there would cancel a slow answer from the app.
type idleBody struct {
	io.ReadCloser
	rc   *http.ResponseController
	idle time.Duration
	// stalled: a read hit the deadline. The transport reads the body on a goroutine of its own,
	// and the ErrorHandler asks on the handler's.
	stalled atomic.Bool
}

func (b *idleBody) Read(p []byte) (int, error) {
	b.rc.SetReadDeadline(time.Now().Add(b.idle))
	n, err := b.ReadCloser.Read(p)
	switch {
	case errors.Is(err, os.ErrDeadlineExceeded):
		b.stalled.Store(true)
	case err != nil:
		b.rc.SetReadDeadline(time.Time{})
	}
	return n, err
}
