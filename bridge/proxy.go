package bridge

import (
	"net/http"
	"net/http/httputil"
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
		mux.Handle("/", s.reverseProxy())
	} else {
		mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
			http.Error(w, "not found (wsbridge has no WSBRIDGE_UPSTREAM to proxy to)", http.StatusNotFound)
		})
	}
	return mux
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
