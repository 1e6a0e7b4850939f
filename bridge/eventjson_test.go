package bridge

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
	"time"
)

// TestEncodeEventIsMarshal: encodeEvent writes exactly what json.Marshal writes (the contract's
// golden files are json.Marshal's), for each kind of event and for strings with every byte
// and the characters encoding/json escapes; and an Event with every field set, so that a field
// added to Event without being added to encodeEvent fails here.
func TestEncodeEventIsMarshal(t *testing.T) {
	str := func(s string) *string { return &s }
	yes, no, code, dur, n := true, false, 1000, int64(1234), uint64(7)
	var every Event
	fillEvery(reflect.ValueOf(&every).Elem())
	for _, tc := range []struct {
		name string
		ev   Event
	}{
		{"message", Event{Type: EventMessage, EventID: "E1", ConnectionID: "n.C", Transport: "ws", UserID: "42",
			Meta: json.RawMessage(`{"room":7}`), Channels: []string{"lobby", "room:7"}, Time: "2026-12-02T03:00:00.000Z",
			Data: str(`{"type":"chat","text":"hi"}`), Binary: &no, Seq: 3}},
		{"binary message", Event{Type: EventMessage, Channels: []string{}, DataBase64: str("AAEC"), Binary: &yes, Seq: 1}},
		{"empty data", Event{Type: EventMessage, Data: str(""), Binary: &no, Seq: 1}},
		{"nil channels and meta", Event{Type: EventMessage}},
		{"close", Event{Type: EventClose, Channels: []string{}, Code: &code, Reason: str("bye"), Initiator: InitiatorClient,
			DurationMS: &dur, MessagesIn: &n, MessagesOut: &n}},
		{"meta with spaces", Event{Type: EventMessage, Meta: json.RawMessage(`{ "a" : [1, 2] }`)}},
		{"meta with html", Event{Type: EventMessage, Meta: json.RawMessage(`{"a":"<b>&\u2028"}`)}},
		{"meta empty, not nil", Event{Type: EventMessage, Meta: json.RawMessage{}}},
		{"meta null", Event{Type: EventMessage, Meta: json.RawMessage(`null`)}},
		{"open", Event{Type: EventOpen, Request: &HandshakeRequest{Method: "GET", Path: "/ws", Query: "u=1&t=<x>",
			Headers: map[string]string{"User-Agent": "2", "Cookie": "<1>", "A": "", "a": "é\xff"}, RemoteAddr: "127.0.0.1:5", Subprotocols: []string{"chat"}}}},
		{"open, nothing set", Event{Type: EventOpen, Request: &HandshakeRequest{}}},
		{"every field", every},
		{"escapes", Event{Type: EventMessage, UserID: "\"\\\b\f\n\r\t\x00\x1f\x7f<>&", Data: str("\u2028\u2029\xff\xe2\x80é€😀"),
			Channels: []string{"a\"b", "\xc3"}}},
	} {
		t.Run(tc.name, func(t *testing.T) { sameAsMarshal(t, &tc.ev) })
	}
	t.Run("every byte", func(t *testing.T) {
		var all []byte
		for c := range 256 {
			all = append(all, byte(c))
		}
		sameAsMarshal(t, &Event{Data: str(string(all))})
	})
	t.Run("random", func(t *testing.T) {
		r := rand.New(rand.NewPCG(1, 2))
		alphabet := []string{"a", "\"", "\\", "<", "\n", "\x01", "\xe2\x80\xa8", "\xe2\x80", "é", "\xff", "😀", " "}
		for range 2000 {
			var sb strings.Builder
			for range r.IntN(20) {
				sb.WriteString(alphabet[r.IntN(len(alphabet))])
			}
			s := sb.String()
			sameAsMarshal(t, &Event{Type: EventMessage, UserID: s, Data: &s, Channels: []string{s}})
		}
	})
}

func sameAsMarshal(t *testing.T, ev *Event) {
	t.Helper()
	want, werr := json.Marshal(ev)
	got, err := encodeEvent(ev)
	if werr != nil || err != nil {
		if (werr == nil) != (err == nil) {
			t.Fatalf("encodeEvent: %v; json.Marshal: %v", err, werr)
		}
		return
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("encodeEvent wrote\n%s\njson.Marshal writes\n%s", got, want)
	}
}

// fillEvery sets every field of v (a struct) to a value json.Marshal does not omit.
func fillEvery(v reflect.Value) {
	for i := range v.NumField() {
		f := v.Field(i)
		switch f.Kind() {
		case reflect.String:
			f.SetString("s" + v.Type().Field(i).Name)
		case reflect.Uint64, reflect.Uint:
			f.SetUint(9)
		case reflect.Int, reflect.Int64:
			f.SetInt(9)
		case reflect.Bool:
			f.SetBool(true)
		case reflect.Slice:
			if f.Type() == reflect.TypeFor[json.RawMessage]() {
				f.SetBytes([]byte(`{"k":1}`))
			} else if f.Type().Elem().Kind() == reflect.String {
				f.Set(reflect.ValueOf([]string{"x", "y"}))
			}
		case reflect.Pointer:
			p := reflect.New(f.Type().Elem())
			if p.Elem().Kind() == reflect.Struct {
				fillEvery(p.Elem())
			} else {
				setScalar(p.Elem())
			}
			f.Set(p)
		case reflect.Map:
			m := reflect.MakeMap(f.Type())
			val := reflect.New(f.Type().Elem()).Elem()
			if val.Kind() == reflect.Struct {
				fillEvery(val)
			} else {
				setScalar(val)
			}
			m.SetMapIndex(reflect.ValueOf("h"), val)
			f.Set(m)
		}
	}
}

func setScalar(v reflect.Value) {
	switch v.Kind() {
	case reflect.String:
		v.SetString("p")
	case reflect.Bool:
		v.SetBool(true)
	case reflect.Int, reflect.Int64:
		v.SetInt(5)
	case reflect.Uint64:
		v.SetUint(5)
	}
}

// TestEncodeEventKnowsEveryField: encodeEvent's list is Event's fields, so the fast path is on
// (eventFieldsKnown); a field added to Event must be added to encodeEvent and eventFields.
func TestEncodeEventKnowsEveryField(t *testing.T) {
	if !eventFieldsKnown {
		var names []string
		for f := range reflect.TypeFor[Event]().Fields() {
			names = append(names, f.Name)
		}
		t.Fatalf("Event has fields %v, encodeEvent knows %v (and HandshakeRequest's %v): add the new ones to eventjson.go", names, eventFields, requestFields)
	}
}

// TestSlotSignIsSign: a slot's kept HMAC signs exactly as Sign does, request after request, and
// follows a change of secret.
func TestSlotSignIsSign(t *testing.T) {
	var hc hookConn
	for i, tc := range []struct {
		secret, body string
		unix         int64
	}{
		{"s1", `{"type":"message"}`, 1700000000},
		{"s1", "", 1700000001},
		{"s1", strings.Repeat("x", 1000), 1},
		{"another secret", `{"a":1}`, 1700000002},
		{"s1", `{"a":1}`, 1700000002},
	} {
		now := time.Unix(tc.unix, 0)
		if got, want := hc.sign([]byte(tc.secret), now, []byte(tc.body)), Sign([]byte(tc.secret), now, []byte(tc.body)); got != want {
			t.Errorf("request %d: slot signed %q, Sign gives %q", i, got, want)
		}
	}
}

// TestEventTimeIsFormat: eventTime writes what the layout does, across years, months, leap
// days, the end of a second and zones away from UTC.
func TestEventTimeIsFormat(t *testing.T) {
	zone := time.FixedZone("x", -5*3600)
	for _, tc := range []time.Time{
		time.Date(2026, 12, 2, 3, 4, 5, 6_000_000, time.UTC),
		time.Date(2024, 2, 29, 23, 59, 59, 999_999_999, time.UTC),
		time.Date(1, 1, 1, 0, 0, 0, 0, time.UTC),
		time.Date(9999, 12, 31, 23, 59, 59, 0, zone),
		time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC),
		time.Date(2026, 1, 1, 0, 0, 0, 1, zone),
		time.Unix(0, 0),
	} {
		if got, want := eventTime(tc), tc.UTC().Format("2006-01-02T15:04:05.000Z07:00"); got != want {
			t.Errorf("eventTime(%v) = %q, want %q", tc, got, want)
		}
	}
}
