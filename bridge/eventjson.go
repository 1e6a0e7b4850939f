package bridge

import (
	"encoding/json"
	"maps"
	"reflect"
	"slices"
	"strconv"
	"time"
	"unicode/utf8"
)

// encodeEvent is json.Marshal(ev), byte for byte, without reflection for the events the bridge
// sends most: every message and close webhook. encoding/json spent about 12,000 instructions
// on a message event, an eighth of the bridge's work per client message (BenchmarkMessagePath
// under callgrind, docs/benchmarks.md); this costs a fraction of that and one allocation.
//
// It writes what json.Marshal writes, HTML escaping included, and hands the rest to
// json.Marshal: a meta that json.Marshal would compact or escape, and any Event or
// HandshakeRequest with fields this encoder does not know (eventFields: a field added to
// either is encoded by json.Marshal until it is added here, and TestEncodeEventIsMarshal fails
// until then).
func encodeEvent(ev *Event) ([]byte, error) {
	if !eventFieldsKnown || !plainJSON(ev.Meta) || ev.Meta != nil && len(ev.Meta) == 0 {
		return json.Marshal(ev) // (an empty, non-nil meta is json.Marshal's error to report)
	}
	b := make([]byte, 0, 320+len(ev.Meta)+eventDataLen(ev))
	b = append(b, `{"type":`...)
	b = appendJSONString(b, string(ev.Type))
	b = append(b, `,"event_id":`...)
	b = appendJSONString(b, ev.EventID)
	b = append(b, `,"connection_id":`...)
	b = appendJSONString(b, ev.ConnectionID)
	b = append(b, `,"transport":`...)
	b = appendJSONString(b, ev.Transport)
	b = append(b, `,"user_id":`...)
	b = appendJSONString(b, ev.UserID)
	b = append(b, `,"meta":`...)
	if ev.Meta == nil {
		b = append(b, "null"...)
	} else {
		b = append(b, ev.Meta...)
	}
	b = appendStrings(append(b, `,"channels":`...), ev.Channels)
	b = append(b, `,"time":`...)
	b = appendJSONString(b, ev.Time)
	if r := ev.Request; r != nil {
		b = appendRequest(append(b, `,"request":`...), r)
	}
	if ev.Resume != nil {
		// Only an open event of a client that asks to resume carries it: rare enough for
		// encoding/json, whose map ordering and escaping it then gets for free.
		r, err := json.Marshal(ev.Resume)
		if err != nil {
			return nil, err
		}
		b = append(append(b, `,"resume":`...), r...)
	}
	if ev.Data != nil {
		b = append(b, `,"data":`...)
		b = appendJSONString(b, *ev.Data)
	}
	if ev.DataBase64 != nil {
		b = append(b, `,"data_base64":`...)
		b = appendJSONString(b, *ev.DataBase64)
	}
	if ev.Binary != nil {
		b = append(b, `,"binary":`...)
		b = strconv.AppendBool(b, *ev.Binary)
	}
	if ev.Seq != 0 {
		b = append(b, `,"seq":`...)
		b = strconv.AppendUint(b, ev.Seq, 10)
	}
	if ev.Code != nil {
		b = append(b, `,"code":`...)
		b = strconv.AppendInt(b, int64(*ev.Code), 10)
	}
	if ev.Reason != nil {
		b = append(b, `,"reason":`...)
		b = appendJSONString(b, *ev.Reason)
	}
	if ev.Initiator != "" {
		b = append(b, `,"initiator":`...)
		b = appendJSONString(b, string(ev.Initiator))
	}
	if ev.DurationMS != nil {
		b = append(b, `,"duration_ms":`...)
		b = strconv.AppendInt(b, *ev.DurationMS, 10)
	}
	if ev.MessagesIn != nil {
		b = append(b, `,"messages_in":`...)
		b = strconv.AppendUint(b, *ev.MessagesIn, 10)
	}
	if ev.MessagesOut != nil {
		b = append(b, `,"messages_out":`...)
		b = strconv.AppendUint(b, *ev.MessagesOut, 10)
	}
	return append(b, '}'), nil
}

// eventDataLen is about what the payload adds to the body, for the buffer's first size.
func eventDataLen(ev *Event) int {
	switch {
	case ev.Data != nil:
		return len(*ev.Data) + len(*ev.Data)/8
	case ev.DataBase64 != nil:
		return len(*ev.DataBase64)
	}
	return 0
}

// eventFields are Event's fields in order, as encodeEvent writes them.
var eventFields = []string{"Type", "EventID", "ConnectionID", "Transport", "UserID", "Meta", "Channels", "Time",
	"Request", "Resume", "Data", "DataBase64", "Binary", "Seq", "Code", "Reason", "Initiator", "DurationMS", "MessagesIn", "MessagesOut"}

// requestFields are HandshakeRequest's fields in order, as appendRequest writes them.
var requestFields = []string{"Method", "Path", "Query", "Headers", "RemoteAddr", "Subprotocols"}

// eventFieldsKnown: Event and HandshakeRequest have exactly the fields encodeEvent writes.
var eventFieldsKnown = fieldsAre(reflect.TypeFor[Event](), eventFields) &&
	fieldsAre(reflect.TypeFor[HandshakeRequest](), requestFields)

func fieldsAre(t reflect.Type, names []string) bool {
	if t.NumField() != len(names) {
		return false
	}
	for i, name := range names {
		if t.Field(i).Name != name {
			return false
		}
	}
	return true
}

// appendRequest appends an open event's request as json.Marshal writes it: the header map
// with its keys sorted.
func appendRequest(b []byte, r *HandshakeRequest) []byte {
	b = appendJSONString(append(b, `{"method":`...), r.Method)
	b = appendJSONString(append(b, `,"path":`...), r.Path)
	b = appendJSONString(append(b, `,"query":`...), r.Query)
	b = append(b, `,"headers":`...)
	if r.Headers == nil {
		b = append(b, "null"...)
	} else {
		b = append(b, '{')
		for i, k := range slices.Sorted(maps.Keys(r.Headers)) {
			if i > 0 {
				b = append(b, ',')
			}
			b = append(appendJSONString(b, k), ':')
			b = appendJSONString(b, r.Headers[k])
		}
		b = append(b, '}')
	}
	b = appendJSONString(append(b, `,"remote_addr":`...), r.RemoteAddr)
	b = appendStrings(append(b, `,"subprotocols":`...), r.Subprotocols)
	return append(b, '}')
}

// appendStrings appends a string slice as json.Marshal writes it (nil: null).
func appendStrings(b []byte, ss []string) []byte {
	if ss == nil {
		return append(b, "null"...)
	}
	b = append(b, '[')
	for i, s := range ss {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendJSONString(b, s)
	}
	return append(b, ']')
}

// plainJSON reports whether json.Marshal writes raw as it is: no white space to compact and
// nothing it escapes for HTML (<, >, &, U+2028, U+2029, whose UTF-8 starts with 0xE2). The meta
// PHP stores is checked JSON (decodeStrict), usually written compactly by json_encode.
func plainJSON(raw json.RawMessage) bool {
	for _, c := range raw {
		switch c {
		case ' ', '\t', '\n', '\r', '<', '>', '&', 0xE2:
			return false
		}
	}
	return true
}

// appendJSONString appends s as encoding/json writes a string with HTML escaping: ", \ and
// control characters escaped (\b, \f, \n, \r, \t by name), <, > and & as \u003c, \u003e,
// \u0026, U+2028 and U+2029 escaped, and each invalid UTF-8 byte as \ufffd.
func appendJSONString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if jsonSafe[c] {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xF])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

const hexDigits = "0123456789abcdef"

// jsonSafe: the ASCII bytes encoding/json writes as they are in HTML-escaping mode.
var jsonSafe = func() (t [utf8.RuneSelf]bool) {
	for c := 0x20; c < utf8.RuneSelf; c++ {
		t[c] = c != '"' && c != '\\' && c != '<' && c != '>' && c != '&'
	}
	return t
}()

// eventTime is t as an event's "time" says it: RFC 3339 in UTC with milliseconds, what
// t.UTC().Format("2006-01-02T15:04:05.000Z07:00") writes, without the layout's parsing (a tenth
// of the bridge's instructions per message event went there before encodeEvent).
func eventTime(t time.Time) string {
	t = t.UTC()
	year, month, day := t.Date()
	hour, minute, sec := t.Clock()
	if year < 0 || year > 9999 {
		return t.Format("2006-01-02T15:04:05.000Z07:00")
	}
	var b [24]byte
	put := func(i, v, digits int) {
		for j := i + digits - 1; j >= i; j-- {
			b[j] = byte('0' + v%10)
			v /= 10
		}
	}
	put(0, year, 4)
	b[4] = '-'
	put(5, int(month), 2)
	b[7] = '-'
	put(8, day, 2)
	b[10] = 'T'
	put(11, hour, 2)
	b[13] = ':'
	put(14, minute, 2)
	b[16] = ':'
	put(17, sec, 2)
	b[19] = '.'
	put(20, t.Nanosecond()/1e6, 3)
	b[23] = 'Z'
	return string(b[:])
}
