package bridge

import (
	"math/rand/v2"
	"reflect"
	"testing"
)

// TestDecodeReplyFastIsStrict: whenever the fast path decodes a reply, decodeStrict decodes it
// to the same Reply; whenever decodeStrict refuses one, the fast path declines it too, so the
// error is decodeStrict's. Then the same over random bodies made of reply-shaped pieces.
func TestDecodeReplyFastIsStrict(t *testing.T) {
	for _, tc := range []struct {
		name     string
		body     string
		wantFast bool
	}{
		{"empty object", `{}`, true},
		{"empty object, spaces", " \t\r\n{ \n}\n", true},
		{"one frame", `{"send":["hello"]}`, true},
		{"frames with spaces", `{ "send" : [ "a" , "b" ] }`, true},
		{"no frames", `{"send":[]}`, true},
		{"escapes", `{"send":["{\"type\":\"chat\",\"t\":\"a\/b\\c\n\t\r\b\f\u00e9\u20ac\u0000\"}"]}`, true},
		{"utf-8", `{"send":["é€😀"]}`, true},
		{"empty string", `{"send":[""]}`, true},
		{"surrogate pair", `{"send":["\ud83d\ude00"]}`, false},
		{"lone surrogate", `{"send":["\ud83d"]}`, false},
		{"invalid utf-8", "{\"send\":[\"\xff\"]}", false},
		{"control character", "{\"send\":[\"a\x01\"]}", false},
		{"bad escape", `{"send":["\x"]}`, false},
		{"short unicode escape", `{"send":["\u00"]}`, false},
		{"object frame", `{"send":[{"data":"x"}]}`, false},
		{"join", `{"join":["a"]}`, true},
		{"open reply", `{"user_id":"42","join":["bench","room:7"],"send":["id n.X"]}`, true},
		{"leave and send", ` { "leave" : [ ], "send" : [ "a" ] } `, true},
		{"empty user id", `{"user_id":""}`, true},
		{"null user id", `{"user_id":null}`, false},
		{"user id a number", `{"user_id":42}`, false},
		{"repeated key", `{"send":["a"],"send":["b"]}`, false},
		{"repeated join", `{"join":["a"],"join":[]}`, false},
		{"escaped key", `{"s\u0065nd":["a"]}`, true},
		{"meta", `{"meta":{"a":1}}`, false},
		{"publish", `{"publish":[{"to":{"all":true},"data":"x"}]}`, false},
		{"close", `{"close":{"code":1000,"reason":""}}`, false},
		{"subprotocol", `{"subprotocol":"chat"}`, false},
		{"upper-case key", `{"SEND":["a"]}`, false},
		{"unknown field", `{"sned":["a"]}`, false},
		{"null send", `{"send":null}`, false},
		{"trailing data", `{"send":["a"]} {}`, false},
		{"trailing comma", `{"send":["a",]}`, false},
		{"unterminated", `{"send":["a"`, false},
		{"not an object", `["a"]`, false},
		{"string", `"a"`, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if fast := compareReplyDecoders(t, []byte(tc.body)); fast != tc.wantFast {
				t.Errorf("fast path took it: %v, want %v", fast, tc.wantFast)
			}
		})
	}
	t.Run("random", func(t *testing.T) {
		r := rand.New(rand.NewPCG(3, 4))
		pieces := []string{`{`, `}`, `"send"`, `:`, `[`, `]`, `,`, ` `, `"a"`, `"\"`, `\u00e9`, `\ud800`, `"`, `\`, "\xff", `é`, `null`, `"join"`, "\n", `"user_id"`, `"leave"`, `"meta"`, `1`}
		fast := 0
		for range 20000 {
			body := []byte(`{"send":[`)
			if r.IntN(4) == 0 {
				body = body[:0]
			}
			for range r.IntN(8) {
				body = append(body, pieces[r.IntN(len(pieces))]...)
			}
			if r.IntN(2) == 0 {
				body = append(body, `"]}`...)
			}
			if compareReplyDecoders(t, body) {
				fast++
			}
		}
		if fast == 0 {
			t.Error("no random body took the fast path: the generator tests nothing")
		}
	})
}

// compareReplyDecoders fails t unless the fast path and decodeStrict agree on body; it reports
// whether the fast path took it.
func compareReplyDecoders(t *testing.T, body []byte) bool {
	t.Helper()
	var fast, strict Reply
	ok := decodeReplyFast(body, &fast)
	err := decodeStrict(body, &strict)
	switch {
	case ok && err != nil:
		t.Fatalf("%q: the fast path took a body decodeStrict refuses (%v)", body, err)
	case ok && !reflect.DeepEqual(fast, strict):
		t.Fatalf("%q: fast path %+v, decodeStrict %+v", body, fast, strict)
	case !ok && !reflect.DeepEqual(fast, Reply{}):
		t.Fatalf("%q: the fast path declined but changed the reply: %+v", body, fast)
	}
	return ok
}
