package bridge

// This file is the contract with PHP: what a webhook carries and what PHP may answer.
// docs/PROTOCOL.md documents it field by field; change both together.

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"unicode/utf8"
)

// EventType names a webhook. It is sent in the WsBridge-Event header and the body's "type".
type EventType string

const (
	EventOpen    EventType = "open"
	EventMessage EventType = "message"
	EventClose   EventType = "close"
)

// Initiator says who ended a connection; it is the close webhook's "initiator".
type Initiator string

const (
	InitiatorClient       Initiator = "client"        // the client sent a close frame or its socket ended
	InitiatorPHP          Initiator = "php"           // a webhook reply carried "close"
	InitiatorAPI          Initiator = "api"           // the push API closed it
	InitiatorServer       Initiator = "server"        // ping timeout, read limit, write error
	InitiatorShutdown     Initiator = "shutdown"      // the bridge is stopping
	InitiatorSlowConsumer Initiator = "slow_consumer" // the client did not read its send queue fast enough
	InitiatorNodeLost     Initiator = "node_lost"     // its node died; a surviving node sends the close (cluster.go)
)

// Event is the JSON body of every webhook. Fields that do not apply to an event type are omitted.
type Event struct {
	Type         EventType       `json:"type"`
	EventID      string          `json:"event_id"`
	ConnectionID string          `json:"connection_id"`
	Transport    string          `json:"transport"` // what the client came by: "ws" (later "sse", "pusher")
	UserID       string          `json:"user_id"`
	Meta         json.RawMessage `json:"meta"`
	Channels     []string        `json:"channels"`
	Time         string          `json:"time"` // RFC 3339, UTC, millisecond precision

	// open
	Request *HandshakeRequest `json:"request,omitempty"`
	Resume  *ResumeRequest    `json:"resume,omitempty"` // what the client asks to resume (history.go)

	// message
	Data       *string `json:"data,omitempty"`
	DataBase64 *string `json:"data_base64,omitempty"`
	Binary     *bool   `json:"binary,omitempty"`
	Seq        uint64  `json:"seq,omitempty"`

	// close
	Code        *int      `json:"code,omitempty"`
	Reason      *string   `json:"reason,omitempty"`
	Initiator   Initiator `json:"initiator,omitempty"`
	DurationMS  *int64    `json:"duration_ms,omitempty"`
	MessagesIn  *uint64   `json:"messages_in,omitempty"`
	MessagesOut *uint64   `json:"messages_out,omitempty"`
}

// HandshakeRequest is what PHP needs from the upgrade request to authenticate it.
type HandshakeRequest struct {
	Method       string            `json:"method"`
	Path         string            `json:"path"`
	Query        string            `json:"query"`
	Headers      map[string]string `json:"headers"`
	RemoteAddr   string            `json:"remote_addr"`
	Subprotocols []string          `json:"subprotocols"`
}

// Reply is what PHP may answer to any webhook. Every field is optional; an empty body or a 204
// means "nothing to do". Which fields an event type allows is checked by decodeReply.
type Reply struct {
	UserID      *string         `json:"user_id,omitempty"`     // open only
	Meta        json.RawMessage `json:"meta,omitempty"`        // replaces the stored meta; a JSON object, or null to clear it
	Join        []string        `json:"join,omitempty"`        // channels this connection joins
	Leave       []string        `json:"leave,omitempty"`       // channels this connection leaves
	Send        []Frame         `json:"send,omitempty"`        // frames to this connection
	Publish     []Publication   `json:"publish,omitempty"`     // messages to other targets, as in POST /v1/publish
	Close       *CloseRequest   `json:"close,omitempty"`       // close this connection after sending "send"
	Subprotocol *string         `json:"subprotocol,omitempty"` // open only: one of the requested subprotocols
}

// CloseRequest asks for a connection to be closed with a code and reason.
type CloseRequest struct {
	Code   int    `json:"code"`
	Reason string `json:"reason"`
}

// Frame is one message PHP sends to a client. On the wire (in "send") it is either a JSON string
// (a text frame) or an object {"data": "..."} / {"data_base64": "..."}. It is the contract and
// nothing else: what the hub hands to clients is a Delivery (delivery.go).
type Frame struct {
	Binary bool
	Data   []byte
}

// UnmarshalJSON accepts a string or an object with exactly one of data / data_base64.
func (f *Frame) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if len(b) > 0 && b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		*f = Frame{Data: []byte(s)}
		return nil
	}
	var obj struct {
		Data       *string `json:"data"`
		DataBase64 *string `json:"data_base64"`
	}
	if err := decodeStrict(b, &obj); err != nil {
		return fmt.Errorf("a frame is a string or {\"data\"|\"data_base64\": ...}: %w", err)
	}
	data, binary, err := payload(obj.Data, obj.DataBase64)
	if err != nil {
		return err
	}
	*f = Frame{Binary: binary, Data: data}
	return nil
}

// MarshalJSON writes a text frame as a string and a binary frame as {"data_base64": ...}.
func (f Frame) MarshalJSON() ([]byte, error) {
	if f.Binary {
		return json.Marshal(map[string]string{"data_base64": base64.StdEncoding.EncodeToString(f.Data)})
	}
	return json.Marshal(string(f.Data))
}

// Publication is one push: a payload and the targets that receive it. It is the item of
// POST /v1/publish and of a reply's "publish".
type Publication struct {
	To         Targets `json:"to"`
	Except     string  `json:"except,omitempty"`
	Event      string  `json:"event,omitempty"` // the Pusher event name Pusher-mode recipients see (pusher.go); native ones get the data alone
	Data       *string `json:"data,omitempty"`
	DataBase64 *string `json:"data_base64,omitempty"`
}

// Targets selects connections. A connection matched several ways receives the message once.
type Targets struct {
	Connections []string `json:"connections,omitempty"`
	Users       []string `json:"users,omitempty"`
	Channels    []string `json:"channels,omitempty"`
	All         bool     `json:"all,omitempty"`
}

// empty reports whether the targets select nothing at all, which is a malformed push.
func (t Targets) empty() bool {
	return !t.All && len(t.Connections) == 0 && len(t.Users) == 0 && len(t.Channels) == 0
}

// frame returns the payload as a frame. validate must have succeeded.
func (p *Publication) frame() Frame {
	data, binary, _ := payload(p.Data, p.DataBase64)
	return Frame{Binary: binary, Data: data}
}

// validate reports the first thing wrong with p, naming the field.
func (p *Publication) validate(l limits) error {
	if p.To.empty() {
		return errors.New(`"to": names no target (connections, users, channels or all)`)
	}
	if err := validateNames("to.connections", p.To.Connections, l.MaxNameLen); err != nil {
		return err
	}
	if err := validateNames("to.users", p.To.Users, l.MaxNameLen); err != nil {
		return err
	}
	if err := validateNames("to.channels", p.To.Channels, l.MaxNameLen); err != nil {
		return err
	}
	if err := p.validatePusher(); err != nil {
		return err
	}
	if _, _, err := payload(p.Data, p.DataBase64); err != nil {
		return err
	}
	return nil
}

// payload decodes exactly one of a text or base64 payload.
func payload(text, b64 *string) (data []byte, binary bool, err error) {
	switch {
	case text != nil && b64 != nil:
		return nil, false, errors.New(`give "data" or "data_base64", not both`)
	case text != nil:
		return []byte(*text), false, nil
	case b64 != nil:
		data, err := base64.StdEncoding.DecodeString(*b64)
		if err != nil {
			return nil, false, fmt.Errorf(`"data_base64": %w`, err)
		}
		return data, true, nil
	default:
		return nil, false, errors.New(`missing "data" or "data_base64"`)
	}
}

// limits bounds what PHP and the push API may ask for.
type limits struct {
	MaxNameLen  int // bytes in a channel name, user id or connection id
	MaxMetaSize int // bytes of the JSON meta object
	MaxChannels int // channels one connection may be in (0: no limit)
}

// limitError is input refused because it goes beyond a configured limit. Limit names the limit
// as the wsbridge_limit_hits_total metric labels it.
type limitError struct {
	Limit string
	Msg   string
}

func (e *limitError) Error() string { return e.Msg }

// limitName returns the limit that err hit, or "".
func limitName(err error) string {
	if err == nil {
		return "" // every answered message passes here: no errors.As, whose target escapes
	}
	var le *limitError
	if errors.As(err, &le) {
		return le.Limit
	}
	return ""
}

// validateName refuses names that could not be used safely as an id, a map key and a URL segment.
func validateName(name string, maxLen int) error {
	switch {
	case name == "":
		return errors.New("is empty")
	case len(name) > maxLen:
		return fmt.Errorf("is %d bytes, more than %d", len(name), maxLen)
	case !utf8.ValidString(name):
		return errors.New("is not valid UTF-8")
	case strings.ContainsFunc(name, func(r rune) bool { return r < 0x20 || r == 0x7f }):
		return errors.New("contains a control character")
	}
	return nil
}

func validateNames(field string, names []string, maxLen int) error {
	for i, n := range names {
		if err := validateName(n, maxLen); err != nil {
			return fmt.Errorf("%s[%d] %w", field, i, err)
		}
	}
	return nil
}

// decodeReply parses and checks PHP's answer to an event of type typ. An empty body is an empty
// reply. Any fault refuses the whole reply, so nothing of a malformed reply is ever applied.
func decodeReply(typ EventType, body []byte, l limits) (*Reply, error) {
	var r Reply
	if len(bytes.TrimSpace(body)) == 0 {
		return &r, nil
	}
	if !decodeReplyFast(body, &r) { // replyjson.go: {} and {"send": [...]} without reflection
		if err := decodeStrict(body, &r); err != nil {
			return nil, err
		}
	}
	if err := r.validate(typ, l); err != nil {
		return nil, err
	}
	return &r, nil
}

func (r *Reply) validate(typ EventType, l limits) error {
	if typ != EventOpen {
		if r.UserID != nil {
			return fmt.Errorf(`"user_id" is only allowed in an open reply`)
		}
		if r.Subprotocol != nil {
			return fmt.Errorf(`"subprotocol" is only allowed in an open reply`)
		}
	}
	if typ == EventClose && (r.Meta != nil || r.Join != nil || r.Leave != nil || r.Send != nil || r.Close != nil) {
		return errors.New(`a close reply may only carry "publish": the connection is gone`)
	}
	if r.UserID != nil && *r.UserID != "" {
		if err := validateName(*r.UserID, l.MaxNameLen); err != nil {
			return fmt.Errorf(`"user_id" %w`, err)
		}
	}
	if r.Meta != nil {
		if err := validateMeta(r.Meta, l.MaxMetaSize); err != nil {
			return err
		}
	}
	if err := validateNames("join", r.Join, l.MaxNameLen); err != nil {
		return err
	}
	if l.MaxChannels > 0 && len(r.Join) > l.MaxChannels {
		return &limitError{"channels", fmt.Sprintf(`"join" names %d channels, more than the limit of %d (WSBRIDGE_MAX_CHANNELS)`, len(r.Join), l.MaxChannels)}
	}
	if err := validateNames("leave", r.Leave, l.MaxNameLen); err != nil {
		return err
	}
	for i := range r.Publish {
		if err := r.Publish[i].validate(l); err != nil {
			return fmt.Errorf("publish[%d]: %w", i, err)
		}
	}
	if r.Close != nil {
		if err := r.Close.validate(); err != nil {
			return fmt.Errorf(`"close": %w`, err)
		}
	}
	return nil
}

// validateMeta accepts a JSON object (or null, which clears the meta) of at most max bytes.
func validateMeta(m json.RawMessage, max int) error {
	if len(m) > max {
		return &limitError{"meta_size", fmt.Sprintf(`"meta" is %d bytes, more than the limit of %d (WSBRIDGE_MAX_META_SIZE)`, len(m), max)}
	}
	t := bytes.TrimSpace(m)
	if string(t) == "null" || (len(t) > 0 && t[0] == '{') {
		return nil
	}
	return errors.New(`"meta" must be a JSON object or null`)
}

// validate checks that a close code may be sent by an application: 1000, or 3000-4999, with a
// reason that fits in a close frame.
func (c *CloseRequest) validate() error {
	if c.Code != 1000 && (c.Code < 3000 || c.Code > 4999) {
		return fmt.Errorf("code %d: use 1000 or 3000-4999", c.Code)
	}
	if len(c.Reason) > 123 {
		return fmt.Errorf("reason is %d bytes, more than 123", len(c.Reason))
	}
	if !utf8.ValidString(c.Reason) {
		return errors.New("reason is not valid UTF-8")
	}
	return nil
}

// decodeStrict decodes exactly one JSON value with no unknown fields and nothing after it.
func decodeStrict(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return describeJSONError(err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("unexpected data after the JSON value")
	}
	return nil
}

// describeJSONError turns encoding/json errors into messages that name the field.
func describeJSONError(err error) error {
	var te *json.UnmarshalTypeError
	var se *json.SyntaxError
	switch {
	case errors.As(err, &te):
		field := te.Field
		if field == "" {
			field = "value"
		}
		return fmt.Errorf("%s: expected %s, got JSON %s", field, te.Type, te.Value)
	case errors.As(err, &se):
		return fmt.Errorf("invalid JSON at byte %d: %v", se.Offset, se)
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return errors.New("invalid JSON: unexpected end of input")
	}
	return err
}
