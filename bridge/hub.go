package bridge

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// recipient is what the hub needs from a connection. It does not depend on the WebSocket type, so
// other transports (SSE, later) can be members too.
type recipient interface {
	ID() string
	// Send queues a delivery for the client without blocking. It reports false when it was
	// not queued: the client is closing, or its queue was full and it is now being closed as a
	// slow consumer. The delivery's bytes are shared with its other recipients: read only.
	Send(Delivery) bool
	// Close asks the client to close with a code and reason and returns at once. The first
	// request wins; later ones are ignored and report false.
	Close(code int, reason string, by Initiator) bool
}

// counters are a connection's message counts, updated by the connection and read by the hub.
type counters struct {
	In, Out atomic.Uint64
}

// connInfo describes a connection, as the push API reports it.
type connInfo struct {
	ID          string          `json:"id"`
	UserID      string          `json:"user_id"`
	Channels    []string        `json:"channels"`
	Meta        json.RawMessage `json:"meta"`
	RemoteAddr  string          `json:"remote_addr"`
	Path        string          `json:"path"`
	Subprotocol string          `json:"subprotocol"`
	Transport   string          `json:"transport"` // "ws", "sse" or "pusher", as in webhook bodies
	ConnectedAt time.Time       `json:"connected_at"`
	MessagesIn  uint64          `json:"messages_in"`
	MessagesOut uint64          `json:"messages_out"`
}

// member is the hub's record of one local connection: the state PHP set and what the API reports.
type member struct {
	client   recipient
	info     connInfo // static parts only: id, remote addr, path, subprotocol, connected at
	counters *counters
	user     string
	meta     json.RawMessage
	channels map[string]struct{}
}

// state is the connection state that every webhook carries back to PHP.
type state struct {
	UserID   string
	Meta     json.RawMessage
	Channels []string
}

// hub knows every local connection by id, user and channel, and delivers frames to them. It
// hands operations on other nodes' connections to the Broker. All methods are safe for
// concurrent use; none blocks on a client.
type hub struct {
	node   string
	broker Broker
	// maxChannels caps the channels of one connection (0: no cap). Joins beyond it are refused
	// whole, never half-applied.
	maxChannels int
	// deflateMin: publications of at least this many bytes are also compressed, once, for the
	// connections that negotiated permessage-deflate (0: COMPRESSION off).
	deflateMin int
	// history numbers and keeps channel publications (history.go); nil: HISTORY_SIZE 0.
	history *history
	// onOccupancy, when set, learns that a channel got its first local member (true) or lost
	// its last (false). It is called under the hub's lock, in the order the changes happen, so
	// it must only queue (Server.pusherOccupancy).
	onOccupancy func(channel string, occupied bool)
	// pusher: the Pusher mode is on, and publications carry their Pusher envelope too.
	pusher bool

	// fanning counts big publications (fanoutChunk recipients or more) being sent right now,
	// and writing the connections' writers running now (conn.drain): together, whether frames
	// are piling up (publishLocal).
	fanning atomic.Int32
	writing atomic.Int64

	// onChange, when set (a cluster broker, cluster_server.go), is told of every connection
	// whose state changed or that is gone, under mu; it only queues the id.
	onChange func(id string)

	mu       sync.RWMutex
	sseConns int // local SSE connections: only with some does a publication look for them (sse.go)
	conns    map[string]*member
	users    map[string]map[string]*member
	channels map[string]map[string]*member
}

// newHub returns an empty hub for node, forwarding to other nodes through broker.
func newHub(node string, broker Broker) *hub {
	return &hub{
		node:     node,
		broker:   broker,
		conns:    make(map[string]*member),
		users:    make(map[string]map[string]*member),
		channels: make(map[string]map[string]*member),
	}
}

// Add registers a connection with its initial state.
func (h *hub) Add(c recipient, info connInfo, counters *counters, user string, meta json.RawMessage, channels []string) {
	m := &member{client: c, info: info, counters: counters, meta: storedMeta(meta), channels: make(map[string]struct{}, len(channels))}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.conns[info.ID] = m
	if info.Transport == transportSSE {
		h.sseConns++
	}
	h.setUserLocked(m, user)
	for _, ch := range channels {
		h.joinLocked(m, ch)
	}
	h.changed(info.ID)
}

// changed tells onChange that id's state changed. Called with mu held.
func (h *hub) changed(id string) {
	if h.onChange != nil {
		h.onChange(id)
	}
}

// Remove forgets a connection and returns its last state (for the close webhook).
func (h *hub) Remove(id string) state {
	h.mu.Lock()
	defer h.mu.Unlock()
	m, ok := h.conns[id]
	if !ok {
		return state{}
	}
	st := m.state()
	for ch := range m.channels {
		h.leaveLocked(m, ch)
	}
	h.setUserLocked(m, "")
	delete(h.conns, id)
	if m.info.Transport == transportSSE {
		h.sseConns--
	}
	h.changed(id)
	return st
}

// State returns what the next webhook of a connection carries.
func (h *hub) State(id string) state {
	h.mu.RLock()
	defer h.mu.RUnlock()
	if m, ok := h.conns[id]; ok {
		return m.state()
	}
	return state{Channels: []string{}}
}

func (m *member) state() state {
	return state{UserID: m.user, Meta: m.meta, Channels: sortedKeys(m.channels)}
}

// Update applies the state changes of one webhook reply to a connection, all under one lock so
// that no other reader sees half of them.
func (h *hub) Update(id string, user *string, meta json.RawMessage, join, leave []string) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	m, ok := h.conns[id]
	if !ok {
		return nil
	}
	if h.maxChannels > 0 {
		// Checked before anything changes, so a refused reply leaves no trace.
		n := len(m.channels)
		// Each channel counts once however often it is named: a repeated leave frees one
		// place, not one per repetition.
		for _, ch := range slices.Compact(slices.Sorted(slices.Values(leave))) {
			if _, in := m.channels[ch]; in && !slices.Contains(join, ch) {
				n--
			}
		}
		for _, ch := range slices.Compact(slices.Sorted(slices.Values(join))) {
			if _, in := m.channels[ch]; !in {
				n++
			}
		}
		if n > h.maxChannels {
			return &limitError{"channels", fmt.Sprintf("the connection would be in %d channels, more than the limit of %d (WSBRIDGE_MAX_CHANNELS)", n, h.maxChannels)}
		}
	}
	if user != nil {
		h.setUserLocked(m, *user)
	}
	if meta != nil {
		m.meta = storedMeta(meta)
	}
	for _, ch := range leave {
		h.leaveLocked(m, ch)
	}
	for _, ch := range join {
		h.joinLocked(m, ch)
	}
	h.changed(id)
	return nil
}

// storedMeta keeps a reply's meta as stored: JSON null clears it, so later webhooks carry null
// rather than a stored "null".
func storedMeta(meta json.RawMessage) json.RawMessage {
	if string(meta) == "null" {
		return nil
	}
	return meta
}

func (h *hub) setUserLocked(m *member, user string) {
	if m.user == user {
		return
	}
	if m.user != "" {
		removeFrom(h.users, m.user, m.info.ID)
	}
	m.user = user
	if user != "" {
		addTo(h.users, user, m)
	}
}

func (h *hub) joinLocked(m *member, ch string) {
	if _, ok := m.channels[ch]; ok {
		return
	}
	m.channels[ch] = struct{}{}
	addTo(h.channels, ch, m)
	if h.onOccupancy != nil && len(h.channels[ch]) == 1 {
		h.onOccupancy(ch, true)
	}
}

func (h *hub) leaveLocked(m *member, ch string) {
	if _, ok := m.channels[ch]; !ok {
		return
	}
	delete(m.channels, ch)
	removeFrom(h.channels, ch, m.info.ID)
	if h.onOccupancy != nil && h.channels[ch] == nil {
		h.onOccupancy(ch, false)
	}
}

func addTo(index map[string]map[string]*member, key string, m *member) {
	set := index[key]
	if set == nil {
		set = make(map[string]*member)
		index[key] = set
	}
	set[m.info.ID] = m
}

func removeFrom(index map[string]map[string]*member, key, id string) {
	set := index[key]
	delete(set, id)
	if len(set) == 0 {
		delete(index, key)
	}
}

// Publish delivers p to the local connections it targets and forwards it to the other nodes.
// It returns the number of local connections the frame was queued for.
func (h *hub) Publish(ctx context.Context, p *Publication) (int, error) {
	if h.history != nil {
		n, pos, published, err := h.history.publish(ctx, h, p) // numbered, kept, then delivered (history.go)
		if err != nil || published {
			return n, err
		}
		return n, h.broker.Publish(ctx, Envelope{Origin: h.node, Op: OpPublish, Publication: p, Position: pos})
	}
	n := h.publishLocal(p.To, p.Except, h.publicationDelivery(p))
	return n, h.broker.Publish(ctx, Envelope{Origin: h.node, Op: OpPublish, Publication: p})
}

// publishLocal sends f to every local connection matched by to, once each, except one.
//
// The recipients are listed under the hub's lock and sent to after it is released: a Send may
// write to the socket (writer.go), and joins, leaves and new connections must not wait behind
// ten thousand system calls. A publication is thereby ordered at its listing: a connection that
// leaves after it may still get it, one that joins after it does not.
//
// A publication is written to idle connections on the spot (conn.Send). A big one is not when
// publications outrun the sockets (another big one is being fanned out, or writers are still
// busy with earlier frames on an eighth as many connections as it has recipients): one write
// per frame would not keep up, so frames queue and each connection's writer sends what has
// piled up in one write. That is what keeps flat-out broadcast near a third of
// the CPU per delivery (docs/benchmarks.md). A small publication (a push to a user, a room of a
// few hundred) costs an HTTP request or a webhook anyway, and its writes do not pile up.
func (h *hub) publishLocal(to Targets, except string, f Delivery) int {
	// Encoded here, once, before any recipient can see it: the recipients run on several
	// goroutines (sendEach) and only ever read these bytes.
	if h.deflateMin > 0 && len(f.Data) >= h.deflateMin {
		f = f.withDeflated() // both encodings, for the recipients that compress or not
	} else {
		f.ws = f.wireFrame()
	}
	p := recipientPool.Get().(*[]recipient)
	rs := (*p)[:0]
	sse := false
	h.mu.RLock()
	if h.sseConns == 0 {
		h.eachLocked(to, func(m *member) {
			if m.info.ID != except {
				rs = append(rs, m.client)
			}
		})
	} else {
		h.eachLocked(to, func(m *member) {
			if m.info.ID != except {
				rs = append(rs, m.client)
				sse = sse || m.info.Transport == transportSSE
			}
		})
	}
	h.mu.RUnlock()
	if sse {
		f = f.withSSE() // its event too, made once, only for a publication that reaches one
	}
	if len(rs) >= fanoutChunk {
		f.queue = h.fanning.Add(1) > 1 || h.writing.Load() >= int64(len(rs)/backlogShare)
		defer h.fanning.Add(-1)
	}
	n := sendEach(rs, f)
	if cap(rs) <= maxPooledRecipients {
		*p = rs[:0]
		recipientPool.Put(p)
	}
	return n
}

// sendEach sends f to every client in rs and clears rs (a pooled list must not keep connections
// alive). When Send writes on the spot, a long list is split over GOMAXPROCS goroutines, this one
// included: one goroutine writing to ten thousand sockets would use one core of several. Queued
// frames are not split: queueing is cheap, and the writers it starts use the other cores.
func sendEach(rs []recipient, f Delivery) int {
	parts := min(runtime.GOMAXPROCS(0), len(rs)/fanoutChunk)
	if parts < 2 || f.queue {
		return sendPart(rs, f)
	}
	per := (len(rs) + parts - 1) / parts
	var wg sync.WaitGroup
	var others atomic.Int64
	for lo := per; lo < len(rs); lo += per {
		part := rs[lo:min(lo+per, len(rs))]
		wg.Go(func() { others.Add(int64(sendPart(part, f))) })
	}
	n := sendPart(rs[:per], f)
	wg.Wait()
	return n + int(others.Load())
}

// fanoutChunk is the fewest recipients per goroutine of a split publication: below that, starting
// a goroutine costs more than it saves.
const fanoutChunk = 1024

func sendPart(rs []recipient, f Delivery) int {
	n := 0
	for i, c := range rs {
		if c.Send(f) {
			n++
		}
		rs[i] = nil
	}
	return n
}

// backlogShare: a big publication queues its frames when writers are still busy on at least
// one in backlogShare of its recipients' worth of connections (publishLocal).
const backlogShare = 8

// recipientPool recycles publications' recipient lists, which for a big channel are large.
var recipientPool = sync.Pool{New: func() any { return new([]recipient) }}

// maxPooledRecipients bounds the lists kept: a rare publication to everyone on a huge node is
// not worth holding its list's memory for.
const maxPooledRecipients = 1 << 16

// eachLocked calls fn once for every distinct local member selected by to.
func (h *hub) eachLocked(to Targets, fn func(*member)) {
	if to.All {
		for _, m := range h.conns {
			fn(m)
		}
		return
	}
	// A single connection, user or channel, the common case, needs no de-duplication.
	var seen map[string]struct{}
	if len(to.Connections)+len(to.Users)+len(to.Channels) > 1 {
		seen = make(map[string]struct{})
	}
	visit := func(m *member) {
		if seen != nil {
			if _, dup := seen[m.info.ID]; dup {
				return
			}
			seen[m.info.ID] = struct{}{}
		}
		fn(m)
	}
	for _, id := range to.Connections {
		if m, ok := h.conns[id]; ok {
			visit(m)
		}
	}
	for _, u := range to.Users {
		for _, m := range h.users[u] {
			visit(m)
		}
	}
	for _, ch := range to.Channels {
		for _, m := range h.channels[ch] {
			visit(m)
		}
	}
}

// CloseConnections asks the targeted connections to close and returns how many local ones were
// asked. Other nodes get the request through the broker.
func (h *hub) CloseConnections(ctx context.Context, to Targets, req CloseRequest, by Initiator) (int, error) {
	n := h.closeLocal(to, req, by)
	return n, h.broker.Publish(ctx, Envelope{Origin: h.node, Op: OpClose, Targets: to, Close: &req})
}

// closeLocal closes the matching local connections and counts those this call closed: one that
// was already closing (asked twice, or ending on its own) is not counted again.
func (h *hub) closeLocal(to Targets, req CloseRequest, by Initiator) int {
	n := 0
	for _, m := range h.match(to) {
		if m.client.Close(req.Code, req.Reason, by) {
			n++
		}
	}
	return n
}

// Subscribe makes the targeted connections join (or, with leave, leave) a channel and returns
// how many local connections changed.
func (h *hub) Subscribe(ctx context.Context, channel string, to Targets, leave bool) (int, error) {
	n, err := h.subscribeLocal(channel, to, leave)
	if err != nil {
		return 0, err
	}
	if !leave {
		h.history.joined(ctx, h, []string{channel}, to) // history.go
	}
	op := OpJoin
	if leave {
		op = OpLeave
	}
	return n, h.broker.Publish(ctx, Envelope{Origin: h.node, Op: op, Targets: to, Channel: channel})
}

func (h *hub) subscribeLocal(channel string, to Targets, leave bool) (int, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	matched := h.matchLocked(to)
	if !leave && h.maxChannels > 0 {
		full := 0
		for _, m := range matched {
			if _, in := m.channels[channel]; !in && len(m.channels) >= h.maxChannels {
				full++
			}
		}
		if full > 0 {
			return 0, &limitError{"channels", fmt.Sprintf("%d of the %d connections are already in %d channels, the limit (WSBRIDGE_MAX_CHANNELS); none joined", full, len(matched), h.maxChannels)}
		}
	}
	for _, m := range matched {
		_, in := m.channels[channel]
		switch {
		case leave && in:
			h.leaveLocked(m, channel)
			h.changed(m.info.ID)
			n++
		case !leave && !in:
			h.joinLocked(m, channel)
			h.changed(m.info.ID)
			n++
		}
	}
	return n, nil
}

// CloseAll asks every local connection to close; used at shutdown.
func (h *hub) CloseAll(code int, reason string, by Initiator) int {
	return h.closeLocal(Targets{All: true}, CloseRequest{Code: code, Reason: reason}, by)
}

func (h *hub) match(to Targets) []*member {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return h.matchLocked(to)
}

// matchLocked returns the distinct local members selected by to.
func (h *hub) matchLocked(to Targets) []*member {
	var out []*member
	h.eachLocked(to, func(m *member) { out = append(out, m) })
	return out
}

// Deliver applies an envelope that another node published.
func (h *hub) Deliver(e Envelope) {
	if e.Origin == h.node {
		return
	}
	switch e.Op {
	case OpPublish:
		if e.Publication != nil && h.history != nil {
			h.history.deliver(h, e)
		} else if e.Publication != nil {
			h.publishLocal(e.Publication.To, e.Publication.Except, h.publicationDelivery(e.Publication))
		}
	case OpClose:
		if e.Close != nil {
			h.closeLocal(e.Targets, *e.Close, InitiatorAPI)
		}
	case OpJoin, OpLeave:
		// Another node already answered its caller; a join refused by the channel cap here
		// is logged by nobody, but counted where the cap is configured (the same on every node).
		h.subscribeLocal(e.Channel, e.Targets, e.Op == OpLeave)
	case opPusher:
		h.pusherFanout(e.Channel, e.Except, e.Frame)
	}
}

// Info describes one local connection.
func (h *hub) Info(id string) (connInfo, bool) {
	h.mu.RLock()
	defer h.mu.RUnlock()
	m, ok := h.conns[id]
	if !ok {
		return connInfo{}, false
	}
	return m.describe(), true
}

func (m *member) describe() connInfo {
	info := m.info
	info.UserID = m.user
	info.Meta = m.meta
	info.Channels = sortedKeys(m.channels)
	info.MessagesIn = m.counters.In.Load()
	info.MessagesOut = m.counters.Out.Load()
	return info
}

// List describes the local connections of a user and/or a channel (both empty: all), sorted by
// id, at most limit of them, and returns the total count.
func (h *hub) List(user, channel string, limit int) ([]connInfo, int) {
	h.mu.RLock()
	defer h.mu.RUnlock()
	var set map[string]*member
	switch {
	case user != "":
		set = h.users[user]
	case channel != "":
		set = h.channels[channel]
	default:
		set = h.conns
	}
	var ms []*member
	for _, m := range set {
		if user != "" && channel != "" {
			if _, in := m.channels[channel]; !in {
				continue
			}
		}
		ms = append(ms, m)
	}
	slices.SortFunc(ms, func(a, b *member) int { return cmp.Compare(a.info.ID, b.info.ID) })
	total := len(ms)
	if len(ms) > limit {
		ms = ms[:limit]
	}
	out := make([]connInfo, len(ms))
	for i, m := range ms {
		out[i] = m.describe()
	}
	return out, total
}

// Members returns a channel's local connection ids (at most limit), its distinct users, and the
// connection count.
func (h *hub) Members(channel string, limit int) (conns, users []string, count int) {
	h.mu.RLock()
	defer h.mu.RUnlock()
	set := h.channels[channel]
	conns = make([]string, 0, min(len(set), limit))
	distinct := make(map[string]struct{})
	for id, m := range set {
		conns = append(conns, id)
		if m.user != "" {
			distinct[m.user] = struct{}{}
		}
	}
	slices.Sort(conns)
	if len(conns) > limit {
		conns = conns[:limit]
	}
	return conns, sortedKeys(distinct), len(set)
}

// hubStats counts what the hub holds.
type hubStats struct {
	Connections int `json:"connections"`
	Users       int `json:"users"`
	Channels    int `json:"channels"`
}

// Stats counts local connections, distinct users and non-empty channels.
func (h *hub) Stats() hubStats {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return hubStats{Connections: len(h.conns), Users: len(h.users), Channels: len(h.channels)}
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
