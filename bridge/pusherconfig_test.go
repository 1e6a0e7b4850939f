package bridge

import (
	"strings"
	"testing"
)

// TestPusherConfig covers the Pusher section: all three of id, key and secret turn the mode on,
// some but not all is an error naming what is missing, and the values are checked.
func TestPusherConfig(t *testing.T) {
	t.Parallel()
	on := func(extra ...string) []string {
		return withWebhook(append([]string{"WSBRIDGE_PUSHER_APP_ID=1001", "WSBRIDGE_PUSHER_KEY=app-key",
			"WSBRIDGE_PUSHER_SECRET=app-secret"}, extra...)...)
	}
	tests := []loadCase{
		{name: "off by default", environ: withWebhook(), check: func(t *testing.T, c Config) {
			if c.pusherOn() {
				t.Error("Pusher mode on without configuration")
			}
			if c.PusherMaxPayload != 10240 {
				t.Errorf("PusherMaxPayload = %d, want 10240", c.PusherMaxPayload)
			}
		}},
		{name: "all three", environ: on(), check: func(t *testing.T, c Config) {
			if !c.pusherOn() {
				t.Error("Pusher mode off with id, key and secret set")
			}
		}},
		{name: "secret from file", environ: withWebhook("WSBRIDGE_PUSHER_APP_ID=1", "WSBRIDGE_PUSHER_KEY=k",
			"WSBRIDGE_PUSHER_SECRET_FILE="+writeSecret(t, " s3cret\n")), check: func(t *testing.T, c Config) {
			if !c.pusherOn() || c.PusherSecret != "s3cret" {
				t.Errorf("pusherOn %v, secret %q; want on, s3cret", c.pusherOn(), c.PusherSecret)
			}
		}},
		{name: "key only", environ: withWebhook("WSBRIDGE_PUSHER_KEY=k"),
			want: map[string]string{"WSBRIDGE_PUSHER_APP_ID": "missing WSBRIDGE_PUSHER_APP_ID, WSBRIDGE_PUSHER_SECRET"}},
		{name: "no secret", environ: withWebhook("WSBRIDGE_PUSHER_APP_ID=1", "WSBRIDGE_PUSHER_KEY=k"),
			want: map[string]string{"WSBRIDGE_PUSHER_SECRET": "missing WSBRIDGE_PUSHER_SECRET"}},
		{name: "blank secret", environ: withWebhook("WSBRIDGE_PUSHER_APP_ID=1", "WSBRIDGE_PUSHER_KEY=k", "WSBRIDGE_PUSHER_SECRET=  "),
			want: map[string]string{"WSBRIDGE_PUSHER_SECRET": "blank"}},
		{name: "secret and file", environ: on("WSBRIDGE_PUSHER_SECRET_FILE=" + writeSecret(t, "b")),
			want: map[string]string{"WSBRIDGE_PUSHER_SECRET": "not both"}},
		{name: "key with colon", environ: on("WSBRIDGE_PUSHER_KEY=a:b"),
			want: map[string]string{"WSBRIDGE_PUSHER_KEY": `"a:b": use 1-64 letters`}},
		{name: "app id with slash", environ: on("WSBRIDGE_PUSHER_APP_ID=1/2"),
			want: map[string]string{"WSBRIDGE_PUSHER_APP_ID": `"1/2": use 1-64 letters`}},
		{name: "key too long", environ: on("WSBRIDGE_PUSHER_KEY=" + strings.Repeat("k", 65)),
			want: map[string]string{"WSBRIDGE_PUSHER_KEY": "use 1-64 letters"}},
		{name: "webhook url", environ: on("WSBRIDGE_PUSHER_WEBHOOK_URL=http://127.0.0.1:9/pusher"),
			check: func(t *testing.T, c Config) {
				if c.PusherWebhookURL == nil || c.PusherWebhookURL.Path != "/pusher" {
					t.Errorf("PusherWebhookURL = %v", c.PusherWebhookURL)
				}
			}},
		{name: "webhook url not http", environ: on("WSBRIDGE_PUSHER_WEBHOOK_URL=ftp://x/"),
			want: map[string]string{"WSBRIDGE_PUSHER_WEBHOOK_URL": "want an absolute http(s) URL"}},
		{name: "webhook url without mode", environ: withWebhook("WSBRIDGE_PUSHER_WEBHOOK_URL=http://127.0.0.1:9/p"),
			want: map[string]string{"WSBRIDGE_PUSHER_WEBHOOK_URL": "the Pusher mode is off"}},
		{name: "payload zero", environ: on("WSBRIDGE_PUSHER_MAX_PAYLOAD=0"),
			want: map[string]string{"WSBRIDGE_PUSHER_MAX_PAYLOAD": "must be greater than 0"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cfg, err := LoadConfig(tc.environ)
			if tc.want == nil {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
			} else {
				checkProblems(t, err, tc.want)
			}
			if tc.check != nil {
				tc.check(t, cfg)
			}
		})
	}
}

// TestPublicationEvent: a publication's Pusher event name is checked with the rest of it.
func TestPublicationEvent(t *testing.T) {
	t.Parallel()
	data := "x"
	l := limits{MaxNameLen: 200, MaxMetaSize: 100, MaxChannels: 10}
	tests := []struct {
		name, event, wantErr string
	}{
		{"none", "", ""},
		{"laravel class", `App\Events\OrderShipped`, ""},
		{"client-like", "client-typing", ""},
		{"reserved pusher", "pusher:subscription_succeeded", "reserved"},
		{"reserved internal", "pusher_internal:member_added", "reserved"},
		{"too long", strings.Repeat("e", 201), "longer than 200"},
		{"bad utf8", "\xff", "UTF-8"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := Publication{To: Targets{Channels: []string{"c"}}, Event: tc.event, Data: &data}
			err := p.validate(l)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("validate: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("validate = %v, want an error with %q", err, tc.wantErr)
			}
		})
	}
}
