package bridge

import (
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"
)

var testLimits = limits{MaxNameLen: 20, MaxMetaSize: 64}

func TestDecodeReply(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		typ  EventType
		body string
		err  string // "" means accepted
	}{
		{"empty body", EventMessage, "", ""},
		{"whitespace body", EventMessage, " \n", ""},
		{"empty object", EventClose, "{}", ""},
		{"full open reply", EventOpen, `{"user_id":"7","meta":{"a":1},"join":["x"],"leave":["y"],"send":["hi",{"data_base64":"AA=="},{"data":"t"}],
			"publish":[{"to":{"all":true},"except":"n.1","data":"j"}],"close":{"code":4000,"reason":"r"},"subprotocol":"p"}`, ""},
		{"meta null clears", EventMessage, `{"meta":null}`, ""},
		{"anonymous user", EventOpen, `{"user_id":""}`, ""},
		{"close may publish", EventClose, `{"publish":[{"to":{"users":["u"]},"data":"left"}]}`, ""},

		{"not JSON", EventMessage, `{"send":`, "unexpected end"},
		{"array", EventMessage, `["hi"]`, "expected bridge.Reply"},
		{"trailing data", EventMessage, `{} {}`, "after the JSON value"},
		{"unknown field", EventMessage, `{"sned":["hi"]}`, `unknown field "sned"`},
		{"user_id outside open", EventMessage, `{"user_id":"7"}`, `"user_id" is only allowed in an open reply`},
		{"subprotocol outside open", EventMessage, `{"subprotocol":"p"}`, `"subprotocol" is only allowed`},
		{"close reply sends", EventClose, `{"send":["x"]}`, `may only carry "publish"`},
		{"meta array", EventMessage, `{"meta":[1]}`, "JSON object or null"},
		{"meta string", EventMessage, `{"meta":"x"}`, "JSON object or null"},
		{"meta too big", EventMessage, `{"meta":{"k":"` + strings.Repeat("x", 64) + `"}}`, "WSBRIDGE_MAX_META_SIZE"},
		{"user id too long", EventOpen, `{"user_id":"` + strings.Repeat("u", 21) + `"}`, `"user_id" is 21 bytes`},
		{"empty channel", EventMessage, `{"join":["ok",""]}`, "join[1] is empty"},
		{"channel type", EventMessage, `{"leave":"x"}`, "leave: expected []string"},
		{"frame object empty", EventMessage, `{"send":[{}]}`, `missing "data"`},
		{"frame number", EventMessage, `{"send":[5]}`, "a frame is a string"},
		{"frame bad base64", EventMessage, `{"send":[{"data_base64":"%%"}]}`, "data_base64"},
		{"frame unknown key", EventMessage, `{"send":[{"text":"x"}]}`, `unknown field "text"`},
		{"publish without target", EventMessage, `{"publish":[{"to":{},"data":"x"}]}`, "publish[0]: \"to\": names no target"},
		{"close code reserved", EventMessage, `{"close":{"code":1001}}`, "code 1001"},
		{"close reason too long", EventMessage, `{"close":{"code":4000,"reason":"` + strings.Repeat("r", 124) + `"}}`, "more than 123"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := decodeReply(tc.typ, []byte(tc.body), testLimits)
			if tc.err == "" {
				if err != nil || r == nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Fatalf("error %v, want one containing %q", err, tc.err)
			}
			if r != nil {
				t.Error("a refused reply was returned")
			}
		})
	}
}

func TestFrameJSON(t *testing.T) {
	t.Parallel()
	for _, f := range []Frame{{Data: []byte("héllo")}, {Binary: true, Data: []byte{0, 0xff}}} {
		b, err := json.Marshal(f)
		if err != nil {
			t.Fatal(err)
		}
		var back Frame
		if err := json.Unmarshal(b, &back); err != nil || back.Binary != f.Binary || string(back.Data) != string(f.Data) {
			t.Errorf("%s round-trips to %+v (%v)", b, back, err)
		}
	}
}

type signatureVector struct {
	Name      string
	Secret    string
	Timestamp int64
	Body      string
	Header    string
	Valid     bool
}

// The vectors in testdata are shared with the PHP side (examples/php tests and the e2e webhook
// script), so both implementations agree byte for byte.
func TestSignatureVectors(t *testing.T) {
	t.Parallel()
	raw, err := os.ReadFile("testdata/signature_vectors.json")
	if err != nil {
		t.Fatal(err)
	}
	var doc struct{ Vectors []signatureVector }
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	if len(doc.Vectors) < 5 {
		t.Fatalf("only %d vectors", len(doc.Vectors))
	}
	for _, v := range doc.Vectors {
		at := time.Unix(v.Timestamp, 0)
		err := Verify([]byte(v.Secret), v.Header, []byte(v.Body), at, 5*time.Minute)
		if v.Valid != (err == nil) {
			t.Errorf("%s: Verify = %v, want valid=%v", v.Name, err, v.Valid)
		}
		if v.Valid {
			if got := Sign([]byte(v.Secret), at, []byte(v.Body)); got != v.Header {
				t.Errorf("%s: Sign = %s, want %s", v.Name, got, v.Header)
			}
		}
	}
}

func TestVerifyRefusesOldAndMalformedSignatures(t *testing.T) {
	t.Parallel()
	secret, body := []byte("k"), []byte(`{}`)
	now := time.Unix(1_800_000_000, 0)
	good := Sign(secret, now, body)
	for _, tc := range []struct {
		name, header string
		at           time.Time
		err          string
	}{
		{"valid", good, now, ""},
		{"within tolerance", good, now.Add(4 * time.Minute), ""},
		{"replayed later", good, now.Add(6 * time.Minute), "more than 5m0s"},
		{"from the future", good, now.Add(-6 * time.Minute), "more than 5m0s"},
		{"rotated secrets: second v1 matches", "v1=00," + good, now, ""},
		{"no timestamp", "v1=00", now, "missing or bad t="},
		{"garbage", "nonsense", now, "not key=value"},
		{"bad hex", "t=1,v1=zz", now, "not hex"},
	} {
		err := Verify(secret, tc.header, body, tc.at, 5*time.Minute)
		if (tc.err == "") != (err == nil) || err != nil && !strings.Contains(err.Error(), tc.err) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.err)
		}
	}
}
