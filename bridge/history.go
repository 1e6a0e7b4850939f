package bridge

// Channel history and recovery after a reconnect (HISTORY_SIZE, HISTORY_TTL, HISTORY_CHANNELS;
// docs/PROTOCOL.md, "History and recovery").
//
// A publication to exactly one channel that keeps history gets a position in it, an epoch and
// an offset, and is kept (History). A client that opted in (the wsbridge.v1+json subprotocol)
// receives every frame as JSON that says its channel and position; when it reconnects it hands
// back its last position in every channel it had, as one token, and the bridge sends what it
// missed before anything live: the connection's live deliveries are held from the moment it
// is registered (recovery.Send), the history is read, and the two are merged by offset, so
// nothing is lost and nothing comes twice. What cannot be recovered (expired, evicted, another
// epoch) is said in the first frame, the sync notice, so that the app reloads from its
// database instead of showing a partial state.

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"path"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/wsbridge/wsbridge/bridge/internal/wsraw"
)

// Position is where a publication stands in its channel's history: the epoch names one life of
// the channel's record (it changes when that record is lost, as at a restart of a node that
// keeps it in memory), the offset counts the channel's publications in that epoch from 1. Offset
// 0 is the position before the first publication.
type Position struct {
	Epoch  string `json:"epoch"`
	Offset uint64 `json:"offset"`
}

// HistoryEntry is one kept publication.
type HistoryEntry struct {
	Position Position
	Frame    Frame
	Time     time.Time // when it was published
}

// History keeps the recent publications of channels and numbers them. The bridge keeps one in
// memory (history_memory.go); a Broker that also implements History (one store for the whole
// cluster, written with the publication) replaces it, found by type assertion in New
// (docs/brokers.md).
type History interface {
	// Append keeps f as channel's next publication and returns its position. The offsets of
	// one epoch follow each other with no gap, in the order Append returned them.
	Append(ctx context.Context, channel string, f Frame) (Position, error)
	// Read returns channel's kept publications after since (a zero since: from the oldest
	// kept), oldest first, at most limit of them, and the channel's newest position. A channel
	// with no record gets one (a new epoch at offset 0), so that a client that subscribes to a
	// quiet channel has a position to resume from. Publications of another epoch than since's
	// are never returned.
	Read(ctx context.Context, channel string, since Position, limit int) ([]HistoryEntry, Position, error)
}

// ResumeRequest is what a client asks to resume, as the open webhook's "resume" shows it:
// its last position in every channel it had. PHP still decides the channels (the open reply's
// join); only channels the connection is then in are recovered.
type ResumeRequest struct {
	Positions map[string]Position `json:"positions"`
	// Error says why the client's token could not be read; nothing is then recovered, and
	// the client is told so.
	Error string `json:"error,omitempty"`
}

// errHistory marks a publication the history store refused: nothing of it was delivered.
var errHistory = errors.New("keeping the publication in the history failed")

// framedSubprotocol is the WebSocket subprotocol by which a client opts in to framed
// messages and recovery (PROTOCOL.md). Raw-frame clients, which do not offer it, see nothing of
// this file.
const framedSubprotocol = "wsbridge.v1+json"

// resumeParam is the query parameter that carries a resume token: EventSource polyfills name
// it so, and WebSocket clients, which cannot set headers, use the same.
const resumeParam = "lastEventId"

// maxResumeToken bounds a resume token's length; a longer one is refused as unreadable.
const maxResumeToken = 16 << 10

// history is the hub's view of HISTORY_*: which channels keep history, where, and how much a
// recovery may send. nil in the hub: history is off.
type history struct {
	store    History
	patterns []string
	size     int
	// maxRecover is the most publications one recovery sends, all channels together: the send
	// queue must hold them with the sync notice, or the client would be dropped as a slow
	// consumer on every reconnect.
	maxRecover int
	sweep      func(context.Context) // the memory store's sweeper; nil for a broker's store
	log        *slog.Logger
	locks      [channelLocks]sync.Mutex
	// seq orders a channel's positioned deliveries on this node when the store numbers them for
	// the whole cluster (history_cluster.go); nil with the memory store.
	seq *sequencer
}

// newHistory returns the history of cfg, or nil when HISTORY_SIZE is 0. A broker that
// implements History keeps it; else it is kept in memory.
func newHistory(cfg *Config, broker Broker, log *slog.Logger) *history {
	if cfg.HistorySize <= 0 {
		return nil
	}
	h := &history{patterns: cfg.HistoryChannels, size: cfg.HistorySize, maxRecover: min(cfg.HistorySize, cfg.SendQueue-1), log: log}
	if st, ok := broker.(History); ok {
		h.store = st
		if _, ok := st.(HistoryPublisher); ok {
			h.seq = newSequencer()
		}
		return h
	}
	mem := newMemoryHistory(cfg.HistorySize, cfg.HistoryTTL, nil)
	h.store = mem
	h.sweep = func(ctx context.Context) { mem.run(ctx, max(cfg.HistoryTTL/4, time.Second)) }
	return h
}

// keeps reports whether channel ch keeps history (HISTORY_CHANNELS). "*" alone is every
// channel, "/" included, as its default promises; other patterns are path.Match's.
func (h *history) keeps(ch string) bool {
	for _, p := range h.patterns {
		if ok, _ := path.Match(p, ch); ok || p == "*" {
			return true
		}
	}
	return false
}

// positioned returns the channel in which a publication to to gets a position, or "". Only a
// publication to exactly one channel, and nothing else (no users, connections or all), that
// keeps history has one; others are delivered live only, as with history off: one publication
// with one position per recipient cannot be two channels' next offset.
func (h *history) positioned(to Targets) string {
	if len(to.Channels) != 1 || len(to.Users) > 0 || len(to.Connections) > 0 || to.All || !h.keeps(to.Channels[0]) {
		return ""
	}
	return to.Channels[0]
}

// publish numbers, keeps and delivers p on this node. A channel's publications are numbered and
// delivered under its lock (lockChannels), so that every connection gets them in offset order,
// and a recovery sees each one either in the history it reads or after it, never both. An error
// of the store is returned before anything was delivered.
//
// published reports that the store has also handed the envelope to the other nodes with the
// entry (HistoryPublisher, history_cluster.go): the caller must not publish it again.
func (h *history) publish(ctx context.Context, hb *hub, p *Publication) (n int, pos *Position, published bool, err error) {
	d := hb.publicationDelivery(p)
	st := d.hist // the Pusher mode may have made it
	if st == nil {
		st = &stamped{}
		d.hist = st
	}
	ch := h.positioned(p.To)
	if ch == "" {
		return hb.publishLocal(p.To, p.Except, d), nil, false, nil
	}
	if h.seq != nil {
		return h.publishCluster(ctx, hb, p, d, ch) // history_cluster.go
	}
	mu := &h.locks[channelLock(ch)] // one lock, taken without lockChannels' list
	mu.Lock()
	defer mu.Unlock()
	at, published, err := h.appendPublished(ctx, hb, ch, Frame{Binary: d.Binary, Data: d.Data}, p)
	if err != nil {
		return 0, nil, false, fmt.Errorf("%w of channel %q: %w", errHistory, ch, err)
	}
	st.channel, st.pos = ch, at
	return hb.publishLocal(p.To, p.Except, d), &at, published, nil
}

// deliver delivers a publication another node made, with the position that node gave it
// (Envelope.Position), under its channel's lock as publish does.
func (h *history) deliver(hb *hub, e Envelope) {
	p := e.Publication
	d := hb.publicationDelivery(p)
	st := d.hist // the Pusher mode may have made it
	if st == nil {
		st = &stamped{}
		d.hist = st
	}
	if ch := h.positioned(p.To); ch != "" && e.Position != nil {
		st.channel, st.pos = ch, *e.Position
		if h.seq != nil && !h.seq.wait(ch, st.pos, hb) {
			return // came after its successor (history_cluster.go)
		}
		mu := &h.locks[channelLock(ch)]
		mu.Lock()
		defer mu.Unlock()
		defer h.seq.done(ch, st.pos) // under the lock, with the delivery (history.joined)
	}
	hb.publishLocal(p.To, p.Except, d)
}

// channelLocks order what touches one channel's history: a publication's numbering and fan-out,
// a recovery's read and hand-over. Channels share them by hash: a fixed, small set rather than a
// lock per channel that would have to be made and forgotten.
const channelLocks = 64

func channelLock(ch string) int {
	h := uint32(2166136261) // FNV-1a
	for i := 0; i < len(ch); i++ {
		h = (h ^ uint32(ch[i])) * 16777619
	}
	return int(h % channelLocks)
}

// lockChannels takes the locks of chs, in index order so that two callers never wait on each
// other, and returns what releases them.
func (h *history) lockChannels(chs []string) (unlock func()) {
	var idx []int
	for _, ch := range chs {
		idx = append(idx, channelLock(ch))
	}
	slices.Sort(idx)
	idx = slices.Compact(idx)
	for _, i := range idx {
		h.locks[i].Lock()
	}
	return func() {
		for _, i := range idx {
			h.locks[i].Unlock()
		}
	}
}

// stamped is what a Delivery carries for framed clients: its channel and position when it has
// one, and its framed WebSocket frame, made once, by the first framed recipient that writes it.
type stamped struct {
	channel string
	pos     Position // zero: the delivery has no position
	notice  bool     // Data is already a framed message (the sync notice)
	// positions are the sync notice's, for SSE's id: (appendResumeID).
	positions map[string]Position
	// joined marks a join notice: the connection joined channel, at pos (history.joined).
	joined bool
	// pusher is the publication as Pusher-mode recipients get it, its Pusher envelope encoded
	// (hub.publicationDelivery, pusherproto.go); nil outside the Pusher mode.
	pusher *Delivery

	once   sync.Once
	framed []byte
	// soloID is the SSE id of a client whose only history channel is this one, the common
	// case, made once for all of them (appendResumeID).
	soloOnce sync.Once
	soloID   string
}

// framedMessage is one server-to-client message of wsbridge.v1+json (PROTOCOL.md).
type framedMessage struct {
	Type       string  `json:"type"`
	Channel    string  `json:"channel,omitempty"`
	Epoch      string  `json:"epoch,omitempty"`
	Offset     uint64  `json:"offset,omitempty"`
	Data       *string `json:"data,omitempty"`
	DataBase64 *string `json:"data_base64,omitempty"`
}

// framedFrame returns f as a wsbridge.v1+json text frame.
func (f Delivery) framedFrame() []byte {
	if f.hist == nil {
		return f.encodeFramed() // a reply's frame, for one connection
	}
	f.hist.once.Do(func() { f.hist.framed = f.encodeFramed() })
	return f.hist.framed
}

func (f Delivery) encodeFramed() []byte {
	var b []byte
	if f.hist != nil && f.hist.notice {
		b = f.Data
	} else {
		m := framedMessage{Type: "message"}
		if f.hist != nil && f.hist.pos.Epoch != "" {
			m.Type, m.Channel, m.Epoch, m.Offset = "publication", f.hist.channel, f.hist.pos.Epoch, f.hist.pos.Offset
		}
		s := string(f.Data)
		if f.Binary {
			s = base64.StdEncoding.EncodeToString(f.Data)
			m.DataBase64 = &s
		} else {
			m.Data = &s
		}
		b, _ = json.Marshal(m) // strings and numbers only: cannot fail
	}
	return wsraw.AppendFrame(make([]byte, 0, wsraw.MaxFrameHeader+len(b)), 0x81, b)
}

// syncNotice is the first message a framed client gets (PROTOCOL.md): where it stands in every
// history channel it is in, and whether what it asked to resume was recovered whole.
type syncNotice struct {
	Type      string              `json:"type"` // "sync"
	Recovered bool                `json:"recovered"`
	Positions map[string]Position `json:"positions"`
	Lost      []string            `json:"lost"`
	Error     string              `json:"error,omitempty"`
}

// parseResumeToken reads a resume token: base64url (no padding) of a JSON object mapping each
// channel to its position, {"news":{"epoch":"k3j9x2ab0q","offset":8}}.
func parseResumeToken(tok string, l limits) (map[string]Position, error) {
	if len(tok) > maxResumeToken {
		return nil, fmt.Errorf("resume token is %d bytes, more than %d", len(tok), maxResumeToken)
	}
	raw, err := base64.RawURLEncoding.DecodeString(tok)
	if err != nil {
		return nil, errors.New("resume token is not base64url without padding")
	}
	var pos map[string]Position
	if err := decodeStrict(raw, &pos); err != nil {
		return nil, fmt.Errorf("resume token: %w", err)
	}
	if pos == nil {
		return nil, errors.New("resume token: want a JSON object of channel positions")
	}
	if l.MaxChannels > 0 && len(pos) > l.MaxChannels {
		return nil, fmt.Errorf("resume token names %d channels, more than WSBRIDGE_MAX_CHANNELS=%d", len(pos), l.MaxChannels)
	}
	for ch, p := range pos {
		if err := validateName(ch, l.MaxNameLen); err != nil {
			return nil, fmt.Errorf("resume token: channel name %w", err)
		}
		if p.Epoch == "" || len(p.Epoch) > 64 || strings.ContainsFunc(p.Epoch, func(r rune) bool { return r <= 0x20 || r >= 0x7f }) {
			return nil, fmt.Errorf("resume token: channel %q: epoch must be 1 to 64 printable ASCII characters", ch)
		}
	}
	return pos, nil
}

// resumeToken encodes positions as the token a client hands back (parseResumeToken): the JSON
// written by hand, channels sorted, as encoding/json would but without its reflection, for an
// SSE stream makes one per event (appendResumeID).
func resumeToken(pos map[string]Position) string {
	b := make([]byte, 0, 64*len(pos)+2)
	b = append(b, '{')
	for i, ch := range slices.Sorted(maps.Keys(pos)) {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendJSONString(b, ch)
		b = append(b, `:{"epoch":`...)
		b = appendJSONString(b, pos[ch].Epoch)
		b = append(b, `,"offset":`...)
		b = strconv.AppendUint(b, pos[ch].Offset, 10)
		b = append(b, '}')
	}
	b = append(b, '}')
	return base64.RawURLEncoding.EncodeToString(b)
}

// resumeAsked reads what a client asks to resume, for the open webhook: nil when history is off,
// when a WebSocket client did not opt in (its query is the app's), or when it gave no token.
func (s *Server) resumeAsked(r *http.Request, kind string, offered []string) *ResumeRequest {
	if s.hub.history == nil || (kind == transportWS && !slices.Contains(offered, framedSubprotocol)) {
		return nil
	}
	toks := r.URL.Query()[resumeParam]
	if h := r.Header.Values("Last-Event-ID"); len(h) > 0 {
		toks = h // EventSource's own header wins over a polyfill's parameter
	}
	switch {
	case len(toks) == 0 || (len(toks) == 1 && toks[0] == ""):
		return nil
	case len(toks) > 1:
		return &ResumeRequest{Positions: map[string]Position{}, Error: "resume token given more than once"}
	}
	pos, err := parseResumeToken(toks[0], s.limits)
	if err != nil {
		return &ResumeRequest{Positions: map[string]Position{}, Error: err.Error()}
	}
	return &ResumeRequest{Positions: pos}
}

// pickFramed selects wsbridge.v1+json for a WebSocket client that offered it when history is on
// and PHP named no subprotocol; PHP may still name one (this one or another) itself.
func (s *Server) pickFramed(kind string, reply *Reply, offered []string) {
	if s.hub.history != nil && kind == transportWS && reply.Subprotocol == nil && slices.Contains(offered, framedSubprotocol) {
		sp := framedSubprotocol
		reply.Subprotocol = &sp
	}
}

// recoveryFor returns the recovery of a framed connection (nil for any other): what the hub
// is to hold for it until the sync notice and the missed publications are out.
func (s *Server) recoveryFor(t transport, reply *Reply, asked *ResumeRequest) *recovery {
	if s.hub.history == nil {
		return nil
	}
	if k := t.kind(); k != transportSSE && (k != transportWS || deref(reply.Subprotocol) != framedSubprotocol) {
		return nil
	}
	return &recovery{srv: s, t: t, asked: asked}
}

// recovery stands in the hub for a framed connection from its registration until its sync
// notice and recovered publications are queued: live deliveries meanwhile are held, in order,
// and merged after the history (run). It then steps aside (hub.replaceClient).
type recovery struct {
	srv   *Server
	t     transport
	asked *ResumeRequest

	mu   sync.Mutex
	live bool
	held []Delivery
	// after holds, once live, the channels whose publications up to a position may still come
	// from other nodes although the client already has them (history_cluster.go); the recovery
	// steps aside when it is empty.
	after map[string]Position
}

var _ recipient = (*recovery)(nil)

func (rc *recovery) ID() string { return rc.t.ID() }

func (rc *recovery) Close(code int, reason string, by Initiator) bool {
	return rc.t.Close(code, reason, by)
}

// Send holds d until the recovery is done, within the send queue's bound: a client whose
// recovery cannot keep up with the live publications is a slow consumer like any other.
func (rc *recovery) Send(d Delivery) bool {
	rc.mu.Lock()
	if rc.live {
		send, done := rc.pass(d)
		ok := !send || rc.t.Send(d)
		rc.mu.Unlock()
		if done {
			rc.srv.hub.replaceClient(rc.t.ID(), rc, rc.t)
		}
		return ok
	}
	defer rc.mu.Unlock()
	if len(rc.held) >= rc.srv.cfg.SendQueue {
		rc.t.Close(1008, "slow consumer", InitiatorSlowConsumer)
		return false
	}
	rc.held = append(rc.held, d)
	return true
}

// run recovers: for each history channel the connection is in, its newest position and, for
// those the client asked to resume, the publications after the client's position; then it
// sends the sync notice, the recovered publications channel by channel, and the held live
// ones that are not among them, and lets live deliveries through. It runs once, before the
// open reply's frames (runSession), on the handler's goroutine.
func (rc *recovery) run(ctx context.Context) {
	s, h := rc.srv, rc.srv.hub.history
	id := rc.t.ID()
	n := syncNotice{Type: "sync", Recovered: true, Positions: map[string]Position{}, Lost: []string{}}
	var asked map[string]Position
	if rc.asked != nil {
		asked = rc.asked.Positions
		if rc.asked.Error != "" {
			n.Recovered, n.Error = false, rc.asked.Error
		}
	}
	var chs []string
	for _, ch := range s.hub.State(id).Channels {
		if h.keeps(ch) {
			chs = append(chs, ch)
		}
	}
	// Until the hand-over, no publication to these channels is numbered or delivered: each is
	// in the history read here or comes after it, and none is both (history.publish).
	unlock := h.lockChannels(chs)
	defer unlock()
	var missed []Delivery
	// tops are the channels' newest positions when read: a held publication at or before one
	// is in the history read, or before the position the client is given.
	tops := make(map[string]Position, len(chs))
	// One budget for the whole recovery: the send queue holds it all at once.
	budget := h.maxRecover
	for _, ch := range chs {
		since, resume := asked[ch]
		limit := 0
		if resume {
			limit = budget + 1
		}
		entries, top, err := h.store.Read(ctx, ch, since, limit)
		tops[ch] = top
		switch {
		case err != nil:
			rc.t.base().log.Error("recovery: reading history failed", "channel", ch, "err", err)
			n.Lost = append(n.Lost, ch)
			continue // no position: the client cannot resume what it has not got
		case rc.asked != nil && rc.asked.Error != "":
			n.Lost = append(n.Lost, ch) // whatever it had, it cannot be told
		case resume:
			if why := gap(since, top, len(entries), budget); why != "" {
				rc.t.base().log.Debug("recovery: position lost", "channel", ch, "why", why)
				n.Lost = append(n.Lost, ch)
				break
			}
			budget -= len(entries)
			for _, e := range entries {
				missed = append(missed, Delivery{Binary: e.Frame.Binary, Data: e.Frame.Data, hist: &stamped{channel: ch, pos: e.Position}})
			}
			// The client stands where it was until the recovered publications reach it:
			// one that goes away between the notice and them resumes from there again.
			top = since
		}
		n.Positions[ch] = top
	}
	if len(n.Lost) > 0 {
		n.Recovered = false
	}
	if rc.asked != nil {
		result := "recovered"
		if !n.Recovered {
			result = "lost"
		}
		s.metrics.recoveries.WithLabelValues(result).Inc()
	}
	body, _ := json.Marshal(n)

	rc.mu.Lock()
	ok := rc.t.Send(Delivery{Data: body, hist: &stamped{notice: true, positions: n.Positions}})
	for _, d := range missed {
		ok = ok && rc.t.Send(d)
	}
	for _, d := range rc.held {
		if !ok {
			break
		}
		// A held publication the history already gave (or one from before the position
		// reported) is a duplicate: it was published before the history was read.
		if d.hist != nil && d.hist.pos.Epoch != "" {
			if top, in := tops[d.hist.channel]; in && top.Epoch == d.hist.pos.Epoch && d.hist.pos.Offset <= top.Offset {
				continue
			}
		}
		ok = rc.t.Send(d)
	}
	rc.held, rc.live = nil, true
	rc.after = rc.inFlight(tops)
	rc.mu.Unlock()
	if len(rc.after) == 0 {
		s.hub.replaceClient(id, rc, rc.t)
	}
}

// gap says why a channel cannot be recovered from since, given its newest position top and the
// count of publications read after since, or "" when they fill the gap exactly.
func gap(since, top Position, read, maxRecover int) string {
	switch {
	case since.Epoch != top.Epoch:
		return "epoch changed"
	case since.Offset > top.Offset:
		return "position ahead of the channel"
	case top.Offset-since.Offset > uint64(maxRecover):
		return "more publications missed than a recovery sends"
	case uint64(read) != top.Offset-since.Offset:
		return "publications expired or evicted"
	}
	return ""
}

// replaceClient swaps the recipient of connection id from old to c (a recovery stepping aside).
func (h *hub) replaceClient(id string, old, c recipient) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if m, ok := h.conns[id]; ok && m.client == old {
		m.client = c
	}
}

// handleHistory serves GET /v1/channels/{name}/history?since=&limit= (PROTOCOL.md).
func (s *Server) handleHistory(w http.ResponseWriter, r *http.Request) {
	h := s.hub.history
	name := r.PathValue("name")
	if h == nil {
		apiError(w, http.StatusNotFound, "not_found", "history is off (WSBRIDGE_HISTORY_SIZE=0)")
		return
	}
	if err := validateName(name, s.limits.MaxNameLen); err != nil {
		apiError(w, http.StatusBadRequest, "bad_request", "channel name "+err.Error())
		return
	}
	if !h.keeps(name) {
		apiError(w, http.StatusNotFound, "not_found", fmt.Sprintf("channel %q keeps no history (WSBRIDGE_HISTORY_CHANNELS)", name))
		return
	}
	since, limit, err := historyQuery(r, h.size)
	if err != nil {
		apiError(w, http.StatusBadRequest, "bad_request", err.Error())
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.cfg.BrokerTimeout)
	defer cancel()
	entries, top, err := h.store.Read(ctx, name, since, limit)
	if err != nil {
		apiError(w, http.StatusBadGateway, "broker_error", fmt.Sprintf("reading the history: %v", err))
		return
	}
	if since.Epoch != "" {
		// Reached only when the caller gave a position: say plainly when it cannot be
		// continued from, rather than answer with a list that has a hole at its start.
		switch {
		case since.Epoch != top.Epoch:
			apiError(w, http.StatusConflict, "position_lost", fmt.Sprintf("epoch %q is gone: the channel's history is now epoch %q (it was lost, e.g. by a restart); reload from your database", since.Epoch, top.Epoch))
			return
		case since.Offset > top.Offset:
			apiError(w, http.StatusBadRequest, "bad_request", fmt.Sprintf("since %d is ahead of the channel's newest offset %d", since.Offset, top.Offset))
			return
		case since.Offset < top.Offset && (len(entries) == 0 || entries[0].Position.Offset != since.Offset+1):
			apiError(w, http.StatusConflict, "position_lost", fmt.Sprintf("publications after offset %d have expired or been evicted (WSBRIDGE_HISTORY_TTL, WSBRIDGE_HISTORY_SIZE); reload from your database", since.Offset))
			return
		}
	}
	type item struct {
		Offset     uint64  `json:"offset"`
		Time       string  `json:"time"`
		Data       *string `json:"data,omitempty"`
		DataBase64 *string `json:"data_base64,omitempty"`
	}
	items := make([]item, len(entries))
	for i, e := range entries {
		s := string(e.Frame.Data)
		items[i] = item{Offset: e.Position.Offset, Time: e.Time.UTC().Format("2006-01-02T15:04:05.000Z07:00")}
		if e.Frame.Binary {
			s = base64.StdEncoding.EncodeToString(e.Frame.Data)
			items[i].DataBase64 = &s
		} else {
			items[i].Data = &s
		}
	}
	var next *string
	if n := len(entries); n == limit && entries[n-1].Position.Offset < top.Offset {
		p := top.Epoch + ":" + strconv.FormatUint(entries[n-1].Position.Offset, 10)
		next = &p
	}
	writeJSON(w, http.StatusOK, map[string]any{"channel": name, "epoch": top.Epoch, "offset": top.Offset, "publications": items, "next": next})
}

// historyQuery reads since (epoch:offset, empty: from the oldest kept) and limit (1 to
// HISTORY_SIZE, empty: HISTORY_SIZE) strictly: anything else is refused, never guessed at.
func historyQuery(r *http.Request, size int) (Position, int, error) {
	q := r.URL.Query()
	for k, v := range q {
		if k != "since" && k != "limit" {
			return Position{}, 0, fmt.Errorf("unknown query parameter %q (use since, limit)", k)
		}
		if len(v) > 1 {
			return Position{}, 0, fmt.Errorf("query parameter %q given %d times", k, len(v))
		}
	}
	var since Position
	if v := q.Get("since"); v != "" {
		// The offset follows the last colon: an epoch of another store may hold one.
		i := strings.LastIndexByte(v, ':')
		epoch, off := v[:max(i, 0)], v[i+1:]
		n, err := strconv.ParseUint(off, 10, 64)
		if i < 0 || epoch == "" || err != nil {
			return Position{}, 0, fmt.Errorf("since %q: want epoch:offset, as a publication's position or the answer's next", v)
		}
		since = Position{Epoch: epoch, Offset: n}
	}
	limit := size
	if v, ok := q["limit"]; ok {
		n, err := strconv.Atoi(v[0])
		if err != nil || n < 1 || n > size {
			return Position{}, 0, fmt.Errorf("limit %q: want a whole number from 1 to %d (WSBRIDGE_HISTORY_SIZE)", v[0], size)
		}
		limit = n
	}
	return since, limit, nil
}

// sweepHistory runs the memory store's sweeper until the returned function is called, which
// waits for it to stop.
func (s *Server) sweepHistory(ctx context.Context) (stop func()) {
	h := s.hub.history
	if h == nil || h.sweep == nil {
		return func() {}
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		h.sweep(ctx)
	}()
	return func() { cancel(); <-done }
}

// appendResumeID appends the id: line of an SSE event (WHATWG HTML §9.2.6): the resume token of
// every history channel of the connection, as it stands once the client has this event.
// EventSource keeps the last id it saw and sends it back as Last-Event-ID when it reconnects,
// so the id must cover all the channels, not the event's alone. The sync notice sets where the
// client starts; each publication with a position moves its channel on. Other events carry no
// id: and leave the browser's last one as it was.
func (c *sseConn) appendResumeID(dst []byte, f Delivery) []byte {
	switch {
	case f.hist == nil:
		return dst
	case f.hist.notice && f.hist.joined:
		if c.positions == nil {
			c.positions = make(map[string]Position)
		}
		c.positions[f.hist.channel] = f.hist.pos
	case f.hist.notice:
		c.positions = maps.Clone(f.hist.positions)
	case f.hist.pos.Epoch != "" && c.positions != nil:
		c.positions[f.hist.channel] = f.hist.pos
		if len(c.positions) == 1 {
			// The client's token is the publication's own: encoded once for every such client.
			st := f.hist
			st.soloOnce.Do(func() { st.soloID = resumeToken(map[string]Position{st.channel: st.pos}) })
			dst = append(dst, "id: "...)
			dst = append(dst, st.soloID...)
			return append(dst, '\n')
		}
	default:
		return dst
	}
	dst = append(dst, "id: "...)
	dst = append(dst, resumeToken(c.positions)...)
	return append(dst, '\n')
}

// appendSSENotice appends the sync notice as an SSE event of its own type, "sync", so that a
// page's onmessage never sees it: a page listens for it (addEventListener("sync", ...)) to
// learn whether what it missed was recovered (PROTOCOL.md).
//
// A join notice is the id: line alone: an event without data is not dispatched, but its id
// still becomes the EventSource's last event id (WHATWG HTML §9.2.6, "dispatch the event").
func appendSSENotice(dst []byte, f Delivery) []byte {
	if f.hist.joined {
		return append(dst, '\n')
	}
	dst = append(dst, "event: sync\ndata: "...)
	dst = append(dst, f.Data...) // compact JSON: one line
	return append(dst, "\n\n"...)
}

// joined tells the positioned clients (wsbridge.v1+json and SSE) among to that have just joined
// history channels chs where they start in each: a WebSocket client gets a join message, an SSE
// client's id: moves on. Without it, a client that leaves before the channel's first
// publication reaches it could not name the channel when it resumes, and would silently miss
// what was published meanwhile. The position is read under the channel's lock, like a
// publication's fan-out, so the client's positions only ever move forward. A join that arrives
// from another node (hub.Deliver) sends none: that node's positions are its own (docs/brokers.md).
func (h *history) joined(ctx context.Context, hb *hub, chs []string, to Targets) {
	if h == nil {
		return
	}
	for _, ch := range chs {
		if !h.keeps(ch) {
			continue
		}
		var rs []recipient
		hb.mu.RLock()
		hb.eachLocked(to, func(m *member) {
			if _, in := m.channels[ch]; in && positionedClient(m.client) {
				rs = append(rs, m.client)
			}
		})
		hb.mu.RUnlock()
		if len(rs) == 0 {
			continue
		}
		mu := &h.locks[channelLock(ch)]
		mu.Lock()
		_, top, err := h.store.Read(ctx, ch, Position{}, 0)
		top = h.seq.delivered(ch, top) // history_cluster.go
		if err == nil {
			body, _ := json.Marshal(framedMessage{Type: "join", Channel: ch, Epoch: top.Epoch, Offset: top.Offset})
			d := Delivery{Data: body, hist: &stamped{notice: true, joined: true, channel: ch, pos: top}}
			for _, c := range rs {
				c.Send(d)
			}
		}
		mu.Unlock()
		if err != nil {
			h.log.Error("join notice: reading the channel's position failed", "channel", ch, "err", err)
		}
	}
}

// positionedClient reports whether c takes positions: a wsbridge.v1+json WebSocket, an SSE
// stream, or either while its recovery stands in for it.
func positionedClient(c recipient) bool {
	switch c := c.(type) {
	case *conn:
		return c.framed
	case *sseConn, *recovery:
		return true
	}
	return false
}
