package bridge

import (
	"net/http"
	"net/http/httputil"
	"net/url"
	"path"
	"strings"
)

// PublicHandler serves the public listener: the WebSocket endpoints, and everything else
// reverse-proxied to UPSTREAM so that the browser sees one origin and PHP session cookies work
// for both pages and sockets.
func (s *Server) PublicHandler() http.Handler {
	mux := http.NewServeMux()
	for _, p := range s.cfg.WSPaths {
		mux.HandleFunc(p, s.serveWS)
	}
	if s.cfg.Upstream != nil {
		mux.Handle("/", s.refuseWebhookPaths(s.reverseProxy()))
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
			// Keep the chain of proxies in front of this one and append the client's address,
			// as nginx's $proxy_add_x_forwarded_for does and as the open webhook reports it;
			// the app decides which hops it trusts.
			pr.Out.Header["X-Forwarded-For"] = pr.In.Header["X-Forwarded-For"]
			pr.SetXForwarded()
			// A client must not be able to pose as the bridge to the app's webhook endpoint.
			for name := range pr.Out.Header {
				if strings.HasPrefix(strings.ToLower(name), "wsbridge-") {
					pr.Out.Header.Del(name)
				}
			}
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			s.log.Error("proxy: upstream failed", "path", r.URL.Path, "err", err)
			http.Error(w, "the application is unavailable", http.StatusBadGateway)
		},
	}
}
