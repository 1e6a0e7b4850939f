package bridge

// What a Pusher connection's client sends, and what the bridge answers: pusher:ping,
// pusher:subscribe / pusher:unsubscribe (public, private-, private-encrypted-, presence-),
// client- events, and the presence rosters with their member_added / member_removed. Pusher's
// own messages are answered here and never reach PHP; client events reach the channel's other
// subscribers and then PHP (a message webhook). docs/PROTOCOL.md ("Pusher protocol") lists what
// each message gets.

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/coder/websocket"
)

// pusherMessage is one message of the client: {"event": ..., "channel": ..., "data": ...}.
type pusherMessage struct {
	Event   string          `json:"event"`
	Channel string          `json:"channel"`
	Data    json.RawMessage `json:"data"`
}

// readLoop reads the client's messages one at a time, as conn.readLoop does, and answers each
// as the Pusher protocol says. Only client events wait for PHP; the rest are answered at once.
func (p *pusherConn) readLoop(ctx context.Context) {
	if n := p.scan.Owed; n > 0 {
		p.scan.Owed = 0
		p.allowFrames(int(n))
	}
	for {
		typ, data, err := p.ws.Read(ctx)
		if err != nil {
			p.readFailed(err)
			return
		}
		if p.isClosing() || !p.allowFrame() {
			continue
		}
		if typ == websocket.MessageText && !utf8.Valid(data) {
			p.Close(int(websocket.StatusInvalidFramePayloadData), "invalid UTF-8 in text message", InitiatorServer)
			continue
		}
		p.counters.In.Add(1)
		p.srv.metrics.messagesIn.Inc()
		p.srv.metrics.bytesIn.Add(float64(len(data)))
		if typ != websocket.MessageText {
			p.sendError(pusherMalformed, "binary messages are not part of the Pusher protocol")
			continue
		}
		p.handle(ctx, data)
	}
}

// handle answers one message. Nothing a client sends makes it fail: what is not understood is
// answered with pusher:error code 4300, and the connection goes on.
func (p *pusherConn) handle(ctx context.Context, raw []byte) {
	var msg pusherMessage
	if err := json.Unmarshal(raw, &msg); err != nil || msg.Event == "" {
		p.sendError(pusherMalformed, `malformed message: want a JSON object {"event": "...", "data": ...}`)
		return
	}
	switch {
	case msg.Event == "pusher:ping":
		p.sendSelf(pusherEnvelope("pusher:pong", "", "{}"))
	case msg.Event == "pusher:pong":
		// An answer to nothing the bridge sends (its pings are WebSocket pings); harmless.
	case msg.Event == "pusher:subscribe":
		p.subscribe(msg.Data)
	case msg.Event == "pusher:unsubscribe":
		p.unsubscribe(msg.Data)
	case strings.HasPrefix(msg.Event, "client-"):
		p.clientEvent(ctx, &msg, raw)
	case msg.Event == "pusher:signin":
		p.sendError(pusherMalformed, "pusher:signin is not supported by this server")
	default:
		p.sendError(pusherMalformed, fmt.Sprintf("unknown event %q", pusherClip(msg.Event, 64)))
	}
}

// subscribeData is pusher:subscribe's data. channel_data is a string: the JSON the app's auth
// endpoint signed, byte for byte.
type subscribeData struct {
	Channel     string  `json:"channel"`
	Auth        string  `json:"auth"`
	ChannelData *string `json:"channel_data"`
}

// subscribe joins the client to a channel, once it showed an authorisation for private and
// presence ones, and answers pusher_internal:subscription_succeeded (with the roster of a
// presence channel) or pusher:subscription_error.
func (p *pusherConn) subscribe(raw json.RawMessage) {
	var d subscribeData
	if err := pusherData(raw, &d); err != nil {
		p.sendError(pusherMalformed, `pusher:subscribe: want data {"channel": "...", "auth": "...", "channel_data": "..."}`)
		return
	}
	if err := p.srv.pusherChannelName(d.Channel); err != nil {
		p.subscriptionError(d.Channel, "InvalidChannel", err.Error(), 400)
		return
	}
	kind := pusherChannelKind(d.Channel)
	user, info := "", json.RawMessage(nil)
	if kind != pusherPublic {
		signed := p.id + ":" + d.Channel
		if kind == pusherPresence {
			if d.ChannelData == nil {
				p.subscriptionError(d.Channel, "AuthError", "presence channels need channel_data", 401)
				return
			}
			signed += ":" + *d.ChannelData
		}
		if !p.app.authorised(d.Auth, signed) {
			p.log.Debug("pusher subscription refused: bad authorisation", "channel", d.Channel)
			what := p.id + ":" + d.Channel
			if kind == pusherPresence {
				what += ":<channel_data>"
			}
			p.subscriptionError(d.Channel, "AuthError", "Invalid signature: expected key:HMAC-SHA256 hex digest of "+what, 401)
			return
		}
		if kind == pusherPresence {
			var err error
			if user, info, err = p.srv.presenceMember(*d.ChannelData); err != nil {
				p.subscriptionError(d.Channel, "AuthError", err.Error(), 400)
				return
			}
		}
	}
	if kind == pusherPresence {
		p.joinPresence(d.Channel, user, info)
		return
	}
	if _, in := p.subs[d.Channel]; !in {
		if err := p.srv.hub.pusherJoin(p.id, d.Channel, ""); err != nil {
			p.subscriptionError(d.Channel, "LimitReached", err.Error(), 409)
			return
		}
		p.setSub(d.Channel, "")
	}
	p.sendSelf(pusherEnvelope("pusher_internal:subscription_succeeded", d.Channel, "{}"))
}

// joinPresence subscribes the client to a presence channel as user. Under the app's lock, so
// that the roster it is sent and the member events others are sent agree: a member_added for a
// user is sent only to those whose roster did not have it, and in order with it on each
// connection (Send queues in order).
func (p *pusherConn) joinPresence(ch, user string, info json.RawMessage) {
	a := p.app
	send := false // the other nodes are told once a.mu is released (pushercluster.go)
	defer func() {
		if send {
			p.srv.sendPresence()
		}
	}()
	a.mu.Lock()
	defer a.mu.Unlock()
	if prev, in := p.subs[ch]; in {
		if prev != user {
			p.subscriptionError(ch, "AuthError", "already subscribed as another user", 409)
			return
		}
		p.sendSelf(pusherEnvelope("pusher_internal:subscription_succeeded", ch, a.rosterLocked(ch)))
		return
	}
	if err := p.srv.hub.pusherJoin(p.id, ch, user); err != nil {
		p.subscriptionError(ch, "AuthError", err.Error(), 409)
		return
	}
	p.setSub(ch, user)
	users := a.presence[ch]
	if users == nil {
		users = map[string]*presenceUser{}
		a.presence[ch] = users
	}
	u := users[user]
	first := u == nil
	elsewhere := len(a.remote[ch][user]) > 0 // on another node (pushercluster.go)
	if first {
		u = &presenceUser{info: info}
		users[user] = u
		send = a.queuePresenceLocked("join", ch, map[string]json.RawMessage{user: info})
	}
	u.conns++
	p.sendSelf(pusherEnvelope("pusher_internal:subscription_succeeded", ch, a.rosterLocked(ch)))
	if first && !elsewhere {
		// Per user, not per tab: a second connection of the same user adds nobody.
		added := pusherEnvelope("pusher_internal:member_added", ch, presenceJSON(user, info))
		p.srv.pusherFanout(ch, p.id, added)
		p.srv.pusherEvent(pusherHookEvent{Name: pusherMemberAdded, Channel: ch, UserID: user})
	}
}

func (p *pusherConn) setSub(ch, user string) {
	if p.subs == nil {
		p.subs = make(map[string]string, 1)
	}
	p.subs[ch] = user
}

// unsubscribe leaves a channel; for a presence channel, the user's last connection there leaving
// tells the others member_removed. Unsubscribing from a channel one is not in is no error (as
// Pusher: pusher-js unsubscribes channels whose subscription failed).
func (p *pusherConn) unsubscribe(raw json.RawMessage) {
	var d struct {
		Channel string `json:"channel"`
	}
	if err := pusherData(raw, &d); err != nil || d.Channel == "" {
		p.sendError(pusherMalformed, `pusher:unsubscribe: want data {"channel": "..."}`)
		return
	}
	if _, in := p.subs[d.Channel]; !in {
		return
	}
	p.leave(d.Channel)
	p.srv.hub.Update(p.id, nil, nil, nil, []string{d.Channel})
}

// leave gives up the client's subscription to ch (but not the hub's channel: a closing
// connection keeps its channels for the close webhook).
func (p *pusherConn) leave(ch string) {
	user := p.subs[ch]
	delete(p.subs, ch)
	if pusherChannelKind(ch) != pusherPresence {
		return
	}
	a := p.app
	send := false
	defer func() {
		if send {
			p.srv.sendPresence()
		}
	}()
	a.mu.Lock()
	defer a.mu.Unlock()
	users := a.presence[ch]
	u := users[user]
	if u == nil {
		return
	}
	if u.conns--; u.conns > 0 {
		return // the user is still here in another tab
	}
	delete(users, user)
	if len(users) == 0 {
		delete(a.presence, ch)
	}
	send = a.queuePresenceLocked("leave", ch, map[string]json.RawMessage{user: nil})
	if len(a.remote[ch][user]) > 0 {
		return // still on another node: nobody is told (pushercluster.go)
	}
	p.srv.pusherFanout(ch, p.id, pusherEnvelope("pusher_internal:member_removed", ch, presenceJSON(user, nil)))
	// Before the hub's leave (unsubscribe) or Remove (endSession), so that Pusher's order holds:
	// member_removed before the channel_vacated that the hub's change queues.
	p.srv.pusherEvent(pusherHookEvent{Name: pusherMemberRemoved, Channel: ch, UserID: user})
}

// unsubscribeAll gives up every subscription of a connection that has ended.
func (p *pusherConn) unsubscribeAll() {
	for ch := range p.subs {
		p.leave(ch)
	}
}

// clientEvent relays a client- event to the channel's other Pusher subscribers, with user_id on a
// presence channel, and then delivers it to PHP as a message webhook (the whole message, as the
// client sent it). As Pusher: only on private and presence channels the client subscribed.
func (p *pusherConn) clientEvent(ctx context.Context, msg *pusherMessage, raw []byte) {
	user, in := p.subs[msg.Channel]
	kind := pusherChannelKind(msg.Channel)
	switch {
	case !in:
		p.sendError(pusherClientEventDrop, "client event refused: not subscribed to "+pusherClip(msg.Channel, 200))
		return
	case kind != pusherPrivate && kind != pusherPresence:
		p.sendError(pusherClientEventDrop, "client event refused: client events are allowed on private- and presence- channels only")
		return
	case len(msg.Event) > pusherMaxEventName:
		p.sendError(pusherClientEventDrop, fmt.Sprintf("client event refused: event name longer than %d bytes", pusherMaxEventName))
		return
	case len(msg.Data) > p.app.max:
		p.sendError(pusherClientEventDrop, fmt.Sprintf("client event refused: data is %d bytes, more than %d (WSBRIDGE_PUSHER_MAX_PAYLOAD)", len(msg.Data), p.app.max))
		return
	}
	out := pusherOut{Event: msg.Event, Channel: msg.Channel, Data: msg.Data}
	if len(out.Data) == 0 {
		out.Data = json.RawMessage("null")
	}
	if kind == pusherPresence {
		out.UserID = user
	}
	b, _ := json.Marshal(out) // a RawMessage that json.Unmarshal accepted, and strings
	p.srv.pusherFanout(msg.Channel, p.id, b)
	p.srv.pusherRelay(ctx, msg.Channel, p.id, b)
	p.srv.pusherEvent(pusherHookEvent{Name: pusherClientEvent, Channel: msg.Channel, Event: msg.Event,
		Data: pusherEventText(out.Data), SocketID: p.id, UserID: out.UserID})
	p.seq++
	p.busy.Store(true)
	p.srv.deliverMessage(ctx, p, p.seq, false, raw)
	p.busy.Store(false)
}

// pusherFanout sends a Pusher message, encoded once, to the Pusher connections of channel ch on
// this node, except one. Natively connected members of the channel get nothing: these are the
// protocol's own messages.
func (s *Server) pusherFanout(ch, except string, msg []byte) { s.hub.pusherFanout(ch, except, msg) }

// sendSelf queues a message of the protocol for this client.
func (p *pusherConn) sendSelf(b []byte) { p.conn.Send(Delivery{Data: b}) }

// sendError tells the client what was wrong with its message; the connection stays.
func (p *pusherConn) sendError(code int, msg string) { p.sendSelf(pusherErrorFrame(code, msg)) }

// subscriptionError refuses a subscription on the channel, so that the app's error callback
// (pusher-js's pusher:subscription_error, Laravel Echo's .error()) hears of it.
func (p *pusherConn) subscriptionError(ch, typ, msg string, status int) {
	data, _ := json.Marshal(struct {
		Type   string `json:"type"`
		Error  string `json:"error"`
		Status int    `json:"status"`
	}{typ, msg, status})
	b, _ := json.Marshal(pusherOut{Event: "pusher:subscription_error", Channel: ch, Data: data})
	p.sendSelf(b)
}

// pusherOut is a message to a client. data is JSON as it goes (a string for Pusher's own events,
// whose data is JSON encoded in a string, or a client event's data as its sender gave it).
type pusherOut struct {
	Event   string          `json:"event"`
	Channel string          `json:"channel,omitempty"`
	Data    json.RawMessage `json:"data"`
	UserID  string          `json:"user_id,omitempty"`
}

// pusherEnvelope encodes an event whose data is a string, as Pusher sends its own events and
// every publication.
func pusherEnvelope(event, channel, data string) []byte {
	d, _ := json.Marshal(data)
	b, _ := json.Marshal(pusherOut{Event: event, Channel: channel, Data: d})
	return b
}

func pusherErrorFrame(code int, msg string) []byte {
	d, _ := json.Marshal(struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
	}{code, msg})
	b, _ := json.Marshal(pusherOut{Event: "pusher:error", Data: d})
	return b
}

// pusherData decodes a message's data, given as an object or, as older clients send it, as a
// string holding the object.
func pusherData(raw json.RawMessage, v any) error {
	raw = bytes.TrimSpace(raw)
	if len(raw) > 0 && raw[0] == '"' {
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return err
		}
		raw = []byte(s)
	}
	if len(raw) == 0 || raw[0] != '{' {
		return errors.New("data is not an object")
	}
	return json.Unmarshal(raw, v)
}

type pusherKind int

const (
	pusherPublic pusherKind = iota
	pusherPrivate
	pusherEncrypted // private-encrypted-: authorised as private, payloads relayed unread, no client events
	pusherPresence
)

func pusherChannelKind(ch string) pusherKind {
	switch {
	case strings.HasPrefix(ch, "private-encrypted-"):
		return pusherEncrypted
	case strings.HasPrefix(ch, "private-"):
		return pusherPrivate
	case strings.HasPrefix(ch, "presence-"):
		return pusherPresence
	}
	return pusherPublic
}

// pusherChannelName checks a channel name as Pusher does: [-a-zA-Z0-9_=@,.;] only, and no
// longer than MAX_NAME_LENGTH. #server-to-user- channels (user sign-in) are not served.
func (s *Server) pusherChannelName(ch string) error {
	if ch == "" {
		return errors.New("channel name is empty")
	}
	if len(ch) > s.cfg.MaxNameLength {
		return fmt.Errorf("channel name is %d bytes, more than %d", len(ch), s.cfg.MaxNameLength)
	}
	for i := 0; i < len(ch); i++ {
		switch c := ch[i]; {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', strings.IndexByte("-_=@,.;", c) >= 0:
		default:
			return fmt.Errorf("channel name %q: only letters, digits and -_=@,.; are allowed", pusherClip(ch, 64))
		}
	}
	return nil
}

// authorised checks a channel authorisation "key:signature", where signature is the hex
// HMAC-SHA256 of signed under the app's secret, in constant time.
func (a *pusherApp) authorised(auth, signed string) bool {
	key, sig, ok := strings.Cut(auth, ":")
	if !ok || key != a.key {
		return false
	}
	got, err := hex.DecodeString(sig)
	if err != nil {
		return false
	}
	return hmac.Equal(got, a.sign(signed))
}

func (a *pusherApp) sign(s string) []byte {
	m := hmac.New(sha256.New, a.secret)
	m.Write([]byte(s))
	return m.Sum(nil)
}

// presenceMember reads channel_data: {"user_id": "..." or a number, "user_info": {...}}.
// Laravel sends a numeric user_id as a number; it is the same user as its decimal string.
func (s *Server) presenceMember(channelData string) (string, json.RawMessage, error) {
	var cd struct {
		UserID   json.RawMessage `json:"user_id"`
		UserInfo json.RawMessage `json:"user_info"`
	}
	if err := json.Unmarshal([]byte(channelData), &cd); err != nil {
		return "", nil, errors.New(`channel_data: want a JSON object {"user_id": ..., "user_info": ...}`)
	}
	var user string
	switch {
	case len(cd.UserID) > 0 && cd.UserID[0] == '"':
		json.Unmarshal(cd.UserID, &user)
	case len(cd.UserID) > 0 && (cd.UserID[0] == '-' || '0' <= cd.UserID[0] && cd.UserID[0] <= '9'):
		var n json.Number
		if err := json.Unmarshal(cd.UserID, &n); err == nil {
			user = n.String()
		}
	}
	if err := validateName(user, s.cfg.MaxNameLength); err != nil {
		return "", nil, fmt.Errorf("channel_data: user_id %w", err)
	}
	if string(cd.UserInfo) == "null" {
		cd.UserInfo = nil
	}
	return user, cd.UserInfo, nil
}

// rosterLocked is a presence channel's subscription_succeeded data: every user here, with the
// user_info its first connection gave.
func (a *pusherApp) rosterLocked(ch string) string {
	type presence struct {
		IDs   []string                   `json:"ids"`
		Hash  map[string]json.RawMessage `json:"hash"`
		Count int                        `json:"count"`
	}
	users := a.presence[ch]
	r := presence{Hash: make(map[string]json.RawMessage, len(users))}
	for id, u := range users {
		r.Hash[id] = u.info
	}
	// The users other nodes have (pushercluster.go), with the user_info one of them gave.
	for id, on := range a.remote[ch] {
		if _, here := r.Hash[id]; !here {
			for _, info := range on {
				r.Hash[id] = info
				break
			}
		}
	}
	for id, info := range r.Hash {
		if info == nil {
			r.Hash[id] = json.RawMessage("null")
		}
	}
	r.IDs, r.Count = sortedKeys(r.Hash), len(r.Hash)
	b, _ := json.Marshal(struct {
		Presence presence `json:"presence"`
	}{r})
	return string(b)
}

// presenceJSON is member_added's data (with info) and member_removed's (without).
func presenceJSON(user string, info json.RawMessage) string {
	type member struct {
		UserID   string          `json:"user_id"`
		UserInfo json.RawMessage `json:"user_info,omitempty"`
	}
	b, _ := json.Marshal(member{user, info})
	return string(b)
}

// pusherJoin joins a connection to a channel as Pusher subscribes it: under the MAX_CHANNELS
// cap, and for a presence channel as user. A connection has one user: a presence subscription
// as another user than the one it has (PHP's open reply may have set it) is refused, so that
// no client can speak as a user the app did not make it.
func (h *hub) pusherJoin(id, ch, user string) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	m, ok := h.conns[id]
	if !ok {
		return errors.New("the connection is closing")
	}
	if user != "" && m.user != "" && m.user != user {
		return fmt.Errorf("this connection is user %q; it cannot subscribe as %q", m.user, user)
	}
	if _, in := m.channels[ch]; !in && h.maxChannels > 0 && len(m.channels) >= h.maxChannels {
		return &limitError{"channels", fmt.Sprintf("the connection is in %d channels, the limit (WSBRIDGE_MAX_CHANNELS)", h.maxChannels)}
	}
	if user != "" {
		h.setUserLocked(m, user)
	}
	h.joinLocked(m, ch)
	// The cluster state records the subscription as it does a join by PHP or the API, or the
	// cluster's queries (and the Pusher API's, pushercluster.go) never see it.
	h.changed(id)
	return nil
}

// publicationDelivery makes the hub's delivery of a publication: its frame and, in the Pusher
// mode, the Pusher envelope every Pusher recipient gets instead, encoded once here for all of
// them.
func (h *hub) publicationDelivery(p *Publication) Delivery {
	d := newDelivery(p.frame())
	if h.pusher {
		pd := h.encoded(Delivery{Data: p.pusherEnvelope()})
		d.hist = &stamped{pusher: &pd}
	}
	return d
}

// encoded returns f with its WebSocket frame (and compressed frame) made, as publishLocal makes
// a publication's.
func (h *hub) encoded(f Delivery) Delivery {
	if h.deflateMin > 0 && len(f.Data) >= h.deflateMin {
		return f.withDeflated()
	}
	f.ws = f.wireFrame()
	return f
}

// Event names of publications that name none, as Pusher clients get them.
const (
	pusherDefaultEvent = "wsbridge:message" // a text publication without "event"
	pusherBinaryEvent  = "wsbridge:binary"  // a binary publication: data is its base64
)

// pusherEnvelope is the publication as a Pusher client gets it: {"event", "channel", "data"},
// data the publication's text as a JSON string. The channel is named when the publication
// targets exactly one channel and nothing else; a publication to several channels, users or
// connections carries none, and pusher-js hands it to its global (bind_global) callbacks.
func (p *Publication) pusherEnvelope() []byte {
	event, data := p.Event, deref(p.Data)
	if p.DataBase64 != nil {
		event, data = pusherBinaryEvent, *p.DataBase64
	} else if event == "" {
		event = pusherDefaultEvent
	}
	ch := ""
	if t := p.To; len(t.Channels) == 1 && len(t.Connections) == 0 && len(t.Users) == 0 && !t.All {
		ch = t.Channels[0]
	}
	return pusherEnvelope(event, ch, data)
}

func pusherClip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return strings.ToValidUTF8(s[:n], "") + "…"
}

// pusherEventText is a client event's data as Pusher's client_event webhook carries it: the
// string itself when the client sent a JSON string, else the JSON text of what it sent.
func pusherEventText(data json.RawMessage) string {
	var str string
	if json.Unmarshal(data, &str) == nil {
		return str
	}
	return string(data)
}
