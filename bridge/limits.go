package bridge

import (
	"net"
	"net/http"
	"strings"
	"sync"
)

// admission counts connections, in all and per client address, from the upgrade request until
// the connection has left the hub. It is checked before PHP is asked, so a flood of upgrades
// costs no webhook.
type admission struct {
	max, maxPerIP int // 0: no limit

	mu    sync.Mutex
	total int
	perIP map[string]int
}

// admit reserves a place for a connection from ip, or names the limit that refuses it. The
// returned release must be called exactly once when admitted.
func (a *admission) admit(ip string) (release func(), limit string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.max > 0 && a.total >= a.max {
		return nil, "connections"
	}
	if a.maxPerIP > 0 && a.perIP[ip] >= a.maxPerIP {
		return nil, "connections_per_ip"
	}
	a.total++
	if a.maxPerIP > 0 {
		a.perIP[ip]++
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			a.mu.Lock()
			defer a.mu.Unlock()
			a.total--
			if a.maxPerIP > 0 {
				if a.perIP[ip]--; a.perIP[ip] <= 0 {
					delete(a.perIP, ip)
				}
			}
		})
	}, ""
}

// clientIP is the address limits and logs use: the TCP peer, or what CLIENT_IP_HEADER says when
// a trusted proxy sets it (X-Forwarded-For: the last address, the one that proxy added).
func (s *Server) clientIP(r *http.Request) string {
	if h := s.cfg.ClientIPHeader; h != "" {
		if vs := r.Header.Values(h); len(vs) > 0 {
			last := vs[len(vs)-1]
			if i := strings.LastIndexByte(last, ','); i >= 0 {
				last = last[i+1:]
			}
			if ip := net.ParseIP(strings.TrimSpace(last)); ip != nil {
				return ip.String()
			}
		}
	}
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}
