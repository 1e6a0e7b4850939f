package bridge

import (
	"math"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"
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

// clientAddr is who sent a request, as far as trusted hops can tell.
type clientAddr struct {
	ip     string // the address per-address limits and logs use
	remote string // remote_addr: the peer's ip:port, or the address a trusted proxy named
	chain  string // the X-Forwarded-For hops to pass on, without the peer
	// trusted: the peer is a trusted proxy, so its CLIENT_IP_HEADER may be passed on.
	trusted bool
}

// xff is the X-Forwarded-For PHP gets: the trusted part of the chain, then the peer.
func (c clientAddr) xff(peer string) string {
	if c.chain == "" {
		return peer
	}
	return c.chain + ", " + peer
}

// clientOf finds the client behind r. With TRUSTED_PROXIES, only a trusted peer is believed:
// X-Forwarded-For is walked from the right (each proxy appends the address it saw) past
// trusted hops, and the first untrusted one is the client; what lies left of it was written by
// the client and is dropped. An unparsable hop ends the walk, as nothing left of it can be
// believed. CLIENT_IP_HEADER, when set, then names the client instead. From an untrusted peer
// nothing the client sent is believed: the peer is the client.
//
// Without TRUSTED_PROXIES, CLIENT_IP_HEADER keeps its old meaning (every peer is a trusted
// proxy; X-Forwarded-For's last address), and without either the peer is the client.
func (s *Server) clientOf(r *http.Request) clientAddr {
	peer := peerIP(r)
	c := clientAddr{ip: peer, remote: r.RemoteAddr}
	h := s.cfg.ClientIPHeader
	if len(s.trusted) == 0 {
		if h == "" {
			return c
		}
		c.trusted = true
		c.chain = strings.Join(r.Header.Values("X-Forwarded-For"), ", ")
		if ip := lastIP(r.Header.Values(h)); ip != "" {
			c.ip = ip
		}
		return c
	}
	if !s.isTrusted(peer) {
		return c
	}
	c.trusted = true
	var hops []string
	for _, v := range r.Header.Values("X-Forwarded-For") {
		for hop := range strings.SplitSeq(v, ",") {
			hops = append(hops, strings.TrimSpace(hop))
		}
	}
	from := len(hops) // hops[from:] is the believed part of the chain
	for i := len(hops) - 1; i >= 0; i-- {
		a, err := netip.ParseAddr(hops[i])
		if err != nil {
			break
		}
		from = i
		if !s.trustedAddr(a) {
			break
		}
	}
	if from < len(hops) {
		c.chain = strings.Join(hops[from:], ", ")
		c.ip = canonicalIP(hops[from])
		c.remote = c.ip
	}
	if h != "" && !strings.EqualFold(h, "X-Forwarded-For") {
		if ip := lastIP(r.Header.Values(h)); ip != "" {
			c.ip, c.remote = ip, ip
		}
	}
	return c
}

// clientIP is the address limits and logs use (see clientOf).
func (s *Server) clientIP(r *http.Request) string { return s.clientOf(r).ip }

func peerIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// lastIP is the last address of a header's values ("a, b" lists included), or "".
func lastIP(vs []string) string {
	if len(vs) == 0 {
		return ""
	}
	last := vs[len(vs)-1]
	if i := strings.LastIndexByte(last, ','); i >= 0 {
		last = last[i+1:]
	}
	return canonicalIP(strings.TrimSpace(last))
}

// canonicalIP is s in its canonical form (IPv4-mapped IPv6 as IPv4), or "" when not an address.
func canonicalIP(s string) string {
	a, err := netip.ParseAddr(s)
	if err != nil {
		return ""
	}
	return a.Unmap().WithZone("").String()
}

func (s *Server) isTrusted(ip string) bool {
	a, err := netip.ParseAddr(ip)
	return err == nil && s.trustedAddr(a)
}

func (s *Server) trustedAddr(a netip.Addr) bool {
	a = a.Unmap().WithZone("")
	for _, p := range s.trusted {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// minSweep is the number of tracked addresses below which handshakeLimits never sweeps.
const minSweep = 1024

// handshakeLimits bounds, per client address, the upgrade requests waiting for PHP's open
// answer (MAX_PENDING_HANDSHAKES_PER_IP) and the rate of upgrade requests
// (HANDSHAKE_RATE_PER_IP). Both are checked before PHP is asked, so a flood of handshakes from
// one address costs it no webhook and takes no slot from anyone else.
//
// A rate bucket that has filled up again says nothing a fresh one would not, so buckets are
// kept only for addresses seen lately: when the map has doubled since the last sweep, the full
// ones are dropped. Memory is bounded by the addresses that handshook within the last
// burst/rate seconds (amortised O(1) per handshake).
type handshakeLimits struct {
	maxPending int        // 0: no limit
	rate       rate.Limit // 0: no limit
	burst      int
	now        func() time.Time

	mu      sync.Mutex
	pending map[string]int
	buckets map[string]*rate.Limiter
	sweepAt int
}

func newHandshakeLimits(maxPending int, perSecond float64, burst int) *handshakeLimits {
	return &handshakeLimits{maxPending: maxPending, rate: rate.Limit(perSecond), burst: burst, now: time.Now,
		pending: map[string]int{}, buckets: map[string]*rate.Limiter{}, sweepAt: minSweep}
}

// begin admits one handshake from ip, or names the limit that refuses it. done must be called
// once PHP has answered the open webhook (or the handshake ended before). Every attempt takes a
// token of the rate, whatever becomes of it later: PHP refusing a handshake does not make the
// next one free.
func (h *handshakeLimits) begin(ip string) (done func(), limit string) {
	if h.maxPending <= 0 && h.rate <= 0 {
		return func() {}, ""
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.rate > 0 {
		now := h.now()
		b := h.buckets[ip]
		if b == nil {
			if len(h.buckets) >= h.sweepAt {
				h.sweepLocked(now)
			}
			b = rate.NewLimiter(h.rate, h.burst)
			h.buckets[ip] = b
		}
		if !b.AllowN(now, 1) {
			return nil, "handshake_rate"
		}
	}
	if h.maxPending > 0 {
		if h.pending[ip] >= h.maxPending {
			return nil, "pending_handshakes_per_ip"
		}
		h.pending[ip]++
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			if h.maxPending <= 0 {
				return
			}
			h.mu.Lock()
			defer h.mu.Unlock()
			if h.pending[ip]--; h.pending[ip] <= 0 {
				delete(h.pending, ip)
			}
		})
	}, ""
}

// sweepLocked drops the buckets that have filled up again.
func (h *handshakeLimits) sweepLocked(now time.Time) {
	for ip, b := range h.buckets {
		if b.TokensAt(now) >= float64(h.burst) {
			delete(h.buckets, ip)
		}
	}
	h.sweepAt = max(2*len(h.buckets), minSweep)
}

// tracked is the number of addresses with a bucket (for tests).
func (h *handshakeLimits) tracked() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.buckets)
}

// retryAfter is the Retry-After, in seconds, for a handshake refused by limit.
func (h *handshakeLimits) retryAfter(limit string) string {
	if limit == "handshake_rate" && h.rate > 0 {
		return strconv.Itoa(max(1, int(math.Ceil(1/float64(h.rate)))))
	}
	return "1"
}
