package bridge

// Fuzz targets for everything that parses input from outside: push API requests, PHP's
// webhook replies, signature headers and the environment. Seeds are in testdata/fuzz/<Name>;
// .ci/run runs each target for a few seconds (go test -run '^$' -fuzz '^FuzzName$' ./bridge).

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"
	"unicode"
)

// FuzzPushAPI posts arbitrary bodies to every push endpoint that takes one. The API must answer
// 200 or a 4xx with a JSON {error, detail}, never 5xx and never a panic.
func FuzzPushAPI(f *testing.F) {
	f.Add("/v1/publish", []byte(`{"to":{"channels":["lobby"]},"data":"hi"}`))
	f.Add("/v1/publish", []byte(`[{"to":{"all":true},"data_base64":"AAE="},{"to":{"users":["1"]},"except":"x","data":"b"}]`))
	f.Add("/v1/channels/lobby/join", []byte(`{"users":["42"]}`))
	f.Add("/v1/connections/n.ABC/close", []byte(`{"code":4000,"reason":"bye"}`))
	f.Add("/v1/users/42/close", []byte(``))
	cfg, err := LoadConfig([]string{"WSBRIDGE_WEBHOOK_URL=http://127.0.0.1:9/"})
	if err != nil {
		f.Fatal(err)
	}
	cfg.MaxBatch = 20
	srv := New(cfg, slog.New(slog.DiscardHandler), nil)
	h := srv.InternalHandler()
	f.Fuzz(func(t *testing.T, path string, body []byte) {
		if !strings.HasPrefix(path, "/v1/") || strings.ContainsAny(path, "?#%") {
			return
		}
		if _, err := url.ParseRequestURI(path); err != nil || strings.ContainsFunc(path, func(r rune) bool { return unicode.IsControl(r) || unicode.IsSpace(r) }) {
			return // not a path a client could send
		}
		req := httptest.NewRequest(http.MethodPost, "http://127.0.0.1:8081"+path, bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code >= 500 {
			t.Fatalf("POST %s %q: status %d: %s", path, body, rec.Code, rec.Body)
		}
		if rec.Code >= 400 && rec.Code != http.StatusMethodNotAllowed {
			var e struct{ Error, Detail string }
			if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil || e.Error == "" || e.Detail == "" {
				t.Fatalf("POST %s %q: %d without a JSON error: %s", path, body, rec.Code, rec.Body)
			}
		}
	})
}

// FuzzDecodeReply: a reply decodeReply accepts re-encodes to one it accepts again, and that
// one encodes the same: nothing is lost or changed between decoding and applying.
func FuzzDecodeReply(f *testing.F) {
	f.Add(0, []byte(`{"user_id":"42","meta":{"name":"Ann"},"join":["lobby"],"send":["hi"],"subprotocol":"chat"}`))
	f.Add(1, []byte(`{"meta":null,"leave":["a"],"publish":[{"to":{"channels":["a"]},"except":"x","data":"m"}],"close":{"code":4000,"reason":"bye"}}`))
	f.Add(2, []byte(`{"publish":[{"to":{"all":true},"data_base64":"AAEC"}]}`))
	f.Add(1, []byte(`{"send":[{"data_base64":"//8="},"text"]}`))
	limits := limits{MaxNameLen: 200, MaxMetaSize: 8192, MaxChannels: 100}
	types := []EventType{EventOpen, EventMessage, EventClose}
	f.Fuzz(func(t *testing.T, typ int, body []byte) {
		et := types[uint(typ)%uint(len(types))]
		r, err := decodeReply(et, body, limits)
		if err != nil {
			return
		}
		again, err := json.Marshal(r)
		if err != nil {
			t.Fatalf("accepted reply %q does not re-encode: %v", body, err)
		}
		r2, err := decodeReply(et, again, limits)
		if err != nil {
			t.Fatalf("accepted %q, but refused its re-encoding %s: %v", body, again, err)
		}
		if third, _ := json.Marshal(r2); !bytes.Equal(third, again) {
			t.Fatalf("round trip changed the reply %q:\n %s\n %s", body, again, third)
		}
	})
}

// FuzzVerify: what Sign makes Verify accepts; any other body is refused; no header panics it.
func FuzzVerify(f *testing.F) {
	f.Add([]byte("secret"), "t=1700000000,v1=6d1f", []byte(`{"type":"open"}`), int64(1700000000))
	f.Add([]byte("k"), "t=1,v1=zz,v1=00", []byte(""), int64(0))
	f.Add([]byte(""), ",,=,t=", []byte("x"), int64(-5))
	f.Fuzz(func(t *testing.T, secret []byte, header string, body []byte, unix int64) {
		now := time.Unix(unix%(1<<40), 0)
		Verify(secret, header, body, now, 5*time.Minute) // must not panic
		signed := Sign(secret, now, body)
		if err := Verify(secret, signed, body, now, 5*time.Minute); err != nil {
			t.Fatalf("Verify refused Sign's own header %q: %v", signed, err)
		}
		if err := Verify(secret, signed, append(bytes.Clone(body), '!'), now, 5*time.Minute); err == nil {
			t.Fatalf("Verify accepted a changed body")
		}
		if err := Verify(secret, signed, body, now.Add(6*time.Minute), 5*time.Minute); err == nil {
			t.Fatalf("Verify accepted a signature older than the tolerance")
		}
	})
}

// FuzzLoadConfig: any environment either loads, and then validates clean again, or is refused
// with every problem on a line that names the variable.
func FuzzLoadConfig(f *testing.F) {
	f.Add("WSBRIDGE_WEBHOOK_URL=http://127.0.0.1/hook\nWSBRIDGE_LISTEN=:8080")
	f.Add("WSBRIDGE_WEBHOOK_URL=\nWSBRIDGE_SEND_QUEUE=-1\nWSBRIDGE_PING_INTERVAL=soon")
	f.Add("WSBRIDGE_WEBHOOK_URL=http://php/\nWSBRIDGE_INTERNAL_LISTEN=0.0.0.0:9\nWSBRIDGE_ALLOWED_ORIGINS=[")
	f.Add("WSBRIDGE_WEBHOOK_URL=http://php/\nWSBRIDGE_MESSAGE_RATE=NaN\nWSBRIDGE_CLIENT_IP_HEADER=Forwarded")
	f.Fuzz(func(t *testing.T, env string) {
		var environ []string
		for _, kv := range strings.Split(env, "\n") {
			// Files are not the fuzzer's business: *_FILE would read the disk.
			if k, _, _ := strings.Cut(kv, "="); !strings.HasSuffix(k, "_FILE") {
				environ = append(environ, kv)
			}
		}
		cfg, err := LoadConfig(environ)
		if err != nil {
			ce, ok := err.(*ConfigError)
			if !ok {
				t.Fatalf("LoadConfig error is %T, not *ConfigError: %v", err, err)
			}
			for _, p := range ce.Problems {
				if !strings.HasPrefix(p, EnvPrefix) {
					t.Fatalf("problem %q does not start with the variable's name", p)
				}
			}
			return
		}
		if ps := cfg.validate(); len(ps) != 0 {
			t.Fatalf("a loaded configuration fails validation again: %v", ps)
		}
	})
}
