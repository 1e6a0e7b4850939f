package bridge

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/md5"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// The Pusher HTTP API (https://pusher.com/docs/channels/library_auth_reference/rest-api) on the
// internal listener under /apps/{app_id}/, so that Laravel's pusher broadcaster and any Pusher
// server SDK publish through wsbridge unchanged. Each request is authenticated by Pusher request
// signing, not by API_TOKEN: the SDKs cannot send a bearer token, and the signature already
// proves the sender holds the app secret. refuseBrowsers still applies (push.go): no SDK sends
// an Origin, and a web page must not reach this API any more than /v1/.
//
// Answers are Pusher's: 200 with a JSON body, or an error status with a plain-text explanation
// (the SDKs treat every status but 200 as an error and show the text). A request is checked
// whole before anything is published, so a batch with one bad event publishes nothing.

// pusherTimestampWindow is how far auth_timestamp may be from this host's clock, either way.
// It is Pusher's own (600 s), which every SDK and operator expects; it is not configurable
// because a longer window only widens the time a captured request can be replayed.
const pusherTimestampWindow = 600 * time.Second

// Pusher's limits (https://pusher.com/docs/channels/library_auth_reference/rest-api): the
// payload limit is the configured one (WSBRIDGE_PUSHER_MAX_PAYLOAD, 10 KiB by default).
const (
	pusherMaxChannels  = 100 // channels of one POST events
	pusherMaxBatch     = 10  // events of one POST batch_events
	pusherMaxNameLen   = 200 // bytes of a channel or event name
	pusherMaxSocketLen = 64  // bytes of a socket_id; ours are "<digits>.<digits>"
)

var (
	// pusherChannelName is what the Pusher SDKs accept as a channel name (an optional leading
	// # for the #server-to-user- channels), so a name one SDK refuses is refused here too.
	pusherChannelName = regexp.MustCompile(`^#?[-a-zA-Z0-9_=@,.;]+$`)
	pusherSocketID    = regexp.MustCompile(`^\d+\.\d+$`)
)

// pusherCreds is what the Pusher HTTP API and the Pusher webhooks need of the configuration.
type pusherCreds struct {
	id, key    string
	secret     []byte
	maxPayload int
}

// pusherCreds returns the configured Pusher app, or false when the Pusher mode is off.
func (s *Server) pusherCreds() (pusherCreds, bool) {
	c := &s.cfg.PusherConfig
	if !c.pusherOn() {
		return pusherCreds{}, false
	}
	return pusherCreds{id: c.PusherAppID, key: c.PusherKey, secret: []byte(c.PusherSecret), maxPayload: c.PusherMaxPayload}, true
}

// pusherError is a refused request: Pusher's status and plain-text explanation.
type pusherError struct {
	status int
	msg    string
}

func (e *pusherError) Error() string { return e.msg }

func pusherErrorf(status int, format string, args ...any) *pusherError {
	return &pusherError{status, fmt.Sprintf(format, args...)}
}

// pusherAPI serves /apps/ on the internal listener: Pusher's endpoints for the configured app
// when the Pusher mode is on, else 404 saying how to turn it on.
func (s *Server) pusherAPI() http.Handler {
	app, ok := s.pusherCreds()
	if !ok {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			pusherFail(w, pusherErrorf(http.StatusNotFound, "The Pusher HTTP API is off: set WSBRIDGE_PUSHER_APP_ID, WSBRIDGE_PUSHER_KEY and WSBRIDGE_PUSHER_SECRET"))
		})
	}
	api := &pusherAPI{s: s, app: app, now: time.Now}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /apps/{app}/events", api.handleEvents)
	mux.HandleFunc("POST /apps/{app}/batch_events", api.handleBatch)
	mux.HandleFunc("GET /apps/{app}/channels", api.handleChannels)
	mux.HandleFunc("GET /apps/{app}/channels/{name}", api.handleChannel)
	mux.HandleFunc("GET /apps/{app}/channels/{name}/users", api.handleUsers)
	mux.HandleFunc("POST /apps/{app}/users/{id}/terminate_connections", api.handleTerminate)
	return api.authenticate(mux)
}

type pusherAPI struct {
	s   *Server
	app pusherCreds
	now func() time.Time // the clock auth_timestamp is checked against; tests move it
}

// authenticate reads the body (bounded by MAX_PUSH_BODY) and lets a request through only when
// it is signed for this app, then hands the body on to the endpoint.
func (a *pusherAPI) authenticate(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, a.s.cfg.MaxPushBody))
		var tooLarge *http.MaxBytesError
		switch {
		case errors.As(err, &tooLarge):
			a.s.metrics.limit("push_body")
			pusherFail(w, pusherErrorf(http.StatusRequestEntityTooLarge, "Request body larger than %d bytes (WSBRIDGE_MAX_PUSH_BODY)", a.s.cfg.MaxPushBody))
			return
		case err != nil:
			pusherFail(w, pusherErrorf(http.StatusBadRequest, "Reading the request body: %v", err))
			return
		}
		if perr := a.verify(r.Method, r.URL, body, a.now()); perr != nil {
			// An app whose clock drifted, or that has the wrong secret, fails every publish:
			// the operator must see it. The message holds no secret (the string to sign at most).
			a.s.log.Warn("pusher api: request refused", "status", perr.status, "path", r.URL.Path, "err", perr.msg)
			pusherFail(w, perr)
			return
		}
		// The app id is in the signed path, so this is checked after the signature: a request
		// signed for another app's path was signed by someone holding this app's secret.
		if id, _, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, "/apps/"), "/"); id != a.app.id {
			pusherFail(w, pusherErrorf(http.StatusNotFound, "Unknown app_id %q", id))
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		next.ServeHTTP(w, r)
	})
}

// verify checks Pusher request signing, version 1.0: auth_key is this app's key, auth_timestamp
// is within pusherTimestampWindow of now, body_md5 is the MD5 of the body (required when there
// is one), and auth_signature is the hex HMAC-SHA256, keyed with the app secret, of
//
//	METHOD "\n" PATH "\n" QUERY
//
// where PATH is the path decoded (an SDK signs the path it builds, whatever its HTTP library
// then escapes), and QUERY is every query parameter but auth_signature, keys lower-cased and
// sorted, joined as key=value with "&", values not URL-escaped: exactly what the Pusher SDKs
// sign. The key, the body's MD5 and the signature are compared in constant time. A parameter
// given twice (in any case) is refused: the SDKs never send one, and which of its values was
// signed would be a guess.
func (a *pusherAPI) verify(method string, u *url.URL, body []byte, now time.Time) *pusherError {
	q, err := url.ParseQuery(u.RawQuery)
	if err != nil {
		return pusherErrorf(http.StatusBadRequest, "Malformed query string: %v", err)
	}
	params := make(map[string]string, len(q))
	for k, vs := range q {
		lk := strings.ToLower(k)
		if _, dup := params[lk]; dup || len(vs) > 1 {
			return pusherErrorf(http.StatusBadRequest, "Query parameter %q given more than once", lk)
		}
		params[lk] = vs[0]
	}
	key, ok := params["auth_key"]
	if !ok {
		return pusherErrorf(http.StatusUnauthorized, "Missing auth_key")
	}
	if subtle.ConstantTimeCompare([]byte(key), []byte(a.app.key)) != 1 {
		return pusherErrorf(http.StatusUnauthorized, "Unknown auth_key")
	}
	if v := params["auth_version"]; v != "1.0" {
		return pusherErrorf(http.StatusUnauthorized, "Unsupported auth_version %q: send auth_version=1.0", v)
	}
	ts, err := strconv.ParseInt(params["auth_timestamp"], 10, 64)
	if err != nil {
		return pusherErrorf(http.StatusUnauthorized, "Missing or malformed auth_timestamp: send the Unix time in seconds")
	}
	if d := now.Sub(time.Unix(ts, 0)); d > pusherTimestampWindow || d < -pusherTimestampWindow {
		return pusherErrorf(http.StatusUnauthorized, "Timestamp expired: Given timestamp (%s) not within %ds of server time (%s)",
			time.Unix(ts, 0).UTC().Format(time.RFC3339), int(pusherTimestampWindow/time.Second), now.UTC().Format(time.RFC3339))
	}
	if md5sum, given := params["body_md5"]; len(body) > 0 || given {
		sum := md5.Sum(body)
		want := hex.EncodeToString(sum[:])
		if !given {
			return pusherErrorf(http.StatusUnauthorized, "Missing body_md5: a request with a body must sign the body's MD5")
		}
		if subtle.ConstantTimeCompare([]byte(strings.ToLower(md5sum)), []byte(want)) != 1 {
			return pusherErrorf(http.StatusUnauthorized, "Invalid body_md5: the body sent has MD5 %s, the request says %q", want, md5sum)
		}
	}
	sig, ok := params["auth_signature"]
	if !ok {
		return pusherErrorf(http.StatusUnauthorized, "Missing auth_signature")
	}
	delete(params, "auth_signature")
	toSign := method + "\n" + u.Path + "\n" + pusherQuery(params)
	mac := hmac.New(sha256.New, a.app.secret)
	mac.Write([]byte(toSign))
	got, err := hex.DecodeString(sig)
	if err != nil || !hmac.Equal(got, mac.Sum(nil)) {
		// The string to sign holds nothing secret: showing it is how Pusher helps an SDK author.
		return pusherErrorf(http.StatusUnauthorized, "Invalid signature: you should have sent HmacSHA256Hex(%q, your_secret_key), but you sent %q", toSign, sig)
	}
	return nil
}

// pusherQuery is the signed form of a query: keys sorted, key=value joined with "&", unescaped.
func pusherQuery(params map[string]string) string {
	keys := sortedKeys(params)
	var b strings.Builder
	for i, k := range keys {
		if i > 0 {
			b.WriteByte('&')
		}
		b.WriteString(k)
		b.WriteByte('=')
		b.WriteString(params[k])
	}
	return b.String()
}

// pusherSign returns the query string of a request signed as the Pusher SDKs sign it: params
// plus auth_key, auth_timestamp, auth_version, body_md5 (with a body) and auth_signature. The
// tests sign with it; verify is its other half.
func pusherSign(app pusherCreds, method, path string, params url.Values, body []byte, now time.Time) string {
	p := map[string]string{}
	for k, vs := range params {
		p[strings.ToLower(k)] = vs[0]
	}
	p["auth_key"] = app.key
	p["auth_timestamp"] = strconv.FormatInt(now.Unix(), 10)
	p["auth_version"] = "1.0"
	if len(body) > 0 {
		sum := md5.Sum(body)
		p["body_md5"] = hex.EncodeToString(sum[:])
	}
	mac := hmac.New(sha256.New, app.secret)
	mac.Write([]byte(method + "\n" + path + "\n" + pusherQuery(p)))
	p["auth_signature"] = hex.EncodeToString(mac.Sum(nil))
	q := url.Values{}
	for k, v := range p {
		q.Set(k, v)
	}
	return q.Encode()
}

// pusherEventReq is one event of POST events (channels or channel) or of POST batch_events
// (channel only).
type pusherEventReq struct {
	Name     string   `json:"name"`
	Data     *string  `json:"data"`
	Channels []string `json:"channels,omitempty"`
	Channel  string   `json:"channel,omitempty"`
	SocketID string   `json:"socket_id,omitempty"`
	Info     string   `json:"info,omitempty"`
}

// pusherInfo is what a caller asked to learn about channels (the info parameter).
type pusherInfo struct{ users, subscriptions bool }

// parsePusherInfo reads a comma-separated info list; allowed names the attributes the
// endpoint knows. user_count is only for presence channels, as Pusher has it: presence says
// whether every channel concerned is one.
func parsePusherInfo(s string, allowed []string, presence bool) (pusherInfo, *pusherError) {
	var in pusherInfo
	if s == "" {
		return in, nil
	}
	for attr := range strings.SplitSeq(s, ",") {
		if !slices.Contains(allowed, attr) {
			return in, pusherErrorf(http.StatusBadRequest, "Unknown info attribute %q (valid: %s)", attr, strings.Join(allowed, ", "))
		}
		switch attr {
		case "user_count":
			if !presence {
				return in, pusherErrorf(http.StatusBadRequest, "info=user_count is only available for presence channels")
			}
			in.users = true
		case "subscription_count":
			in.subscriptions = true
		}
	}
	return in, nil
}

// checkPusherChannel refuses a channel name the Pusher SDKs would refuse.
func checkPusherChannel(name string) *pusherError {
	switch {
	case name == "":
		return pusherErrorf(http.StatusBadRequest, "Channel name is empty")
	case len(name) > pusherMaxNameLen:
		return pusherErrorf(http.StatusBadRequest, "Channel name too long: %d bytes, more than %d", len(name), pusherMaxNameLen)
	case !pusherChannelName.MatchString(name):
		return pusherErrorf(http.StatusBadRequest, "Invalid channel name %q: only letters, digits and _ - = @ , . ; are allowed", name)
	}
	return nil
}

// channels returns the event's channels, checked: one to pusherMaxChannels valid, distinct
// names, given as "channels" or (alone, and always in a batch) as "channel".
func (e *pusherEventReq) channels(batch bool) ([]string, *pusherError) {
	chans := e.Channels
	switch {
	case batch && len(chans) > 0:
		return nil, pusherErrorf(http.StatusBadRequest, `A batch event names one "channel", not "channels"`)
	case e.Channel != "" && len(chans) > 0:
		return nil, pusherErrorf(http.StatusBadRequest, `Give "channels" or "channel", not both`)
	case e.Channel != "":
		chans = []string{e.Channel}
	case len(chans) == 0:
		return nil, pusherErrorf(http.StatusBadRequest, `Missing "channels" (or "channel")`)
	case len(chans) > pusherMaxChannels:
		return nil, pusherErrorf(http.StatusBadRequest, "Too many channels: %d, at most %d", len(chans), pusherMaxChannels)
	}
	for i, ch := range chans {
		if err := checkPusherChannel(ch); err != nil {
			return nil, err
		}
		// Twice the same channel would deliver the event twice to its subscribers.
		if slices.Contains(chans[:i], ch) {
			return nil, pusherErrorf(http.StatusBadRequest, "Channel %q is named twice", ch)
		}
	}
	return chans, nil
}

// check validates one event whole and returns its publications, one per channel.
func (a *pusherAPI) check(e *pusherEventReq, batch bool) ([]Publication, pusherInfo, *pusherError) {
	var none pusherInfo
	switch {
	case e.Name == "":
		return nil, none, pusherErrorf(http.StatusBadRequest, `Missing event "name"`)
	case len(e.Name) > pusherMaxNameLen:
		return nil, none, pusherErrorf(http.StatusBadRequest, "Event name too long: %d bytes, more than %d", len(e.Name), pusherMaxNameLen)
	case strings.HasPrefix(e.Name, "pusher:") || strings.HasPrefix(e.Name, "pusher_internal:"):
		// pusher-js acts on these itself (member_added, subscription_succeeded, ...).
		return nil, none, pusherErrorf(http.StatusBadRequest, "Event name %q: the pusher: and pusher_internal: prefixes are the protocol's own", e.Name)
	case e.Data == nil:
		return nil, none, pusherErrorf(http.StatusBadRequest, `Missing "data" (a string)`)
	case len(*e.Data) > a.app.maxPayload:
		a.s.metrics.limit("pusher_payload")
		return nil, none, pusherErrorf(http.StatusRequestEntityTooLarge, "The data content of this event exceeds the allowed maximum (%d bytes)", a.app.maxPayload)
	case e.SocketID != "" && (len(e.SocketID) > pusherMaxSocketLen || !pusherSocketID.MatchString(e.SocketID)):
		return nil, none, pusherErrorf(http.StatusBadRequest, "Invalid socket_id %q: it has the form 1234.5678", e.SocketID)
	}
	chans, err := e.channels(batch)
	if err != nil {
		return nil, none, err
	}
	presence := true
	for _, ch := range chans {
		presence = presence && strings.HasPrefix(ch, "presence-")
	}
	info, err := parsePusherInfo(e.Info, []string{"user_count", "subscription_count"}, presence)
	if err != nil {
		return nil, none, err
	}
	pubs := make([]Publication, len(chans))
	for i, ch := range chans {
		pubs[i] = Publication{To: Targets{Channels: []string{ch}}, Event: e.Name, Data: e.Data, Except: e.SocketID}
		// The hub's own rules (MAX_NAME_LENGTH, the event name) hold for these as for /v1/.
		if verr := pubs[i].validate(a.s.limits); verr != nil {
			return nil, none, pusherErrorf(http.StatusBadRequest, "%v", verr)
		}
	}
	return pubs, info, nil
}

// decodePusherBody parses a JSON body strictly: an unknown field is a mistake worth an answer.
func decodePusherBody(r *http.Request, v any) *pusherError {
	body, _ := io.ReadAll(r.Body) // authenticate already read it into memory
	if len(bytes.TrimSpace(body)) == 0 {
		return pusherErrorf(http.StatusBadRequest, "Empty body: send a JSON object")
	}
	if err := decodeStrict(body, v); err != nil {
		return pusherErrorf(http.StatusBadRequest, "Malformed JSON body: %v", err)
	}
	return nil
}

func (a *pusherAPI) handleEvents(w http.ResponseWriter, r *http.Request) {
	var e pusherEventReq
	if err := decodePusherBody(r, &e); err != nil {
		pusherFail(w, err)
		return
	}
	pubs, info, perr := a.check(&e, false)
	if perr != nil {
		pusherFail(w, perr)
		return
	}
	if perr := a.publish(r, pubs); perr != nil {
		pusherFail(w, perr)
		return
	}
	if info == (pusherInfo{}) {
		writeJSON(w, http.StatusOK, struct{}{})
		return
	}
	out := make(map[string]map[string]int, len(pubs))
	for _, p := range pubs {
		ch := p.To.Channels[0]
		if out[ch], perr = a.channelInfo(r.Context(), ch, info); perr != nil {
			pusherFail(w, perr)
			return
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"channels": out})
}

func (a *pusherAPI) handleBatch(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Batch []pusherEventReq `json:"batch"`
	}
	if err := decodePusherBody(r, &req); err != nil {
		pusherFail(w, err)
		return
	}
	switch {
	case len(req.Batch) == 0:
		pusherFail(w, pusherErrorf(http.StatusBadRequest, `Missing or empty "batch"`))
		return
	case len(req.Batch) > pusherMaxBatch:
		a.s.metrics.limit("batch")
		pusherFail(w, pusherErrorf(http.StatusBadRequest, "Batch too large: %d events, at most %d", len(req.Batch), pusherMaxBatch))
		return
	}
	var pubs []Publication
	infos := make([]pusherInfo, len(req.Batch))
	anyInfo := false
	for i := range req.Batch {
		p, info, perr := a.check(&req.Batch[i], true)
		if perr != nil {
			perr.msg = fmt.Sprintf("Event %d of the batch: %s", i, perr.msg)
			pusherFail(w, perr)
			return
		}
		pubs = append(pubs, p...)
		infos[i] = info
		anyInfo = anyInfo || info != (pusherInfo{})
	}
	if perr := a.publish(r, pubs); perr != nil {
		pusherFail(w, perr)
		return
	}
	if !anyInfo {
		writeJSON(w, http.StatusOK, struct{}{})
		return
	}
	out := make([]map[string]int, len(pubs))
	for i, p := range pubs {
		var perr *pusherError
		if out[i], perr = a.channelInfo(r.Context(), p.To.Channels[0], infos[i]); perr != nil {
			pusherFail(w, perr)
			return
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"batch": out})
}

// publish sends checked publications in order. A broker failure stops there: what went before
// was delivered (on this node at least), and the caller is told so.
func (a *pusherAPI) publish(r *http.Request, pubs []Publication) *pusherError {
	for i := range pubs {
		if _, err := a.s.publish(r.Context(), &pubs[i]); err != nil {
			a.s.log.Error("pusher api: broker failed", "channel", pubs[i].To.Channels[0], "err", err)
			return pusherErrorf(http.StatusBadGateway, "Delivered on this node to channel %q (and the %d channel(s) before it), but forwarding to the other nodes failed: %v", pubs[i].To.Channels[0], i, err)
		}
	}
	return nil
}

// channelInfo is one channel's attributes as Pusher reports them, for the cluster
// (pushercluster.go). The events were published before it is asked: a failure says so, so
// that the caller does not publish them again.
func (a *pusherAPI) channelInfo(ctx context.Context, ch string, info pusherInfo) (map[string]int, *pusherError) {
	out := map[string]int{}
	if info == (pusherInfo{}) {
		return out, nil
	}
	users, count, perr := a.pusherMembers(ctx, ch)
	if perr != nil {
		perr.msg = "The events were published; their info could not be read: " + perr.msg
		return nil, perr
	}
	if info.users {
		out["user_count"] = len(users)
	}
	if info.subscriptions {
		out["subscription_count"] = count
	}
	return out, nil
}

// onlyQuery refuses query parameters other than the signing ones and those named.
func onlyQuery(r *http.Request, names ...string) *pusherError {
	for k := range r.URL.Query() {
		k = strings.ToLower(k)
		if !strings.HasPrefix(k, "auth_") && k != "body_md5" && !slices.Contains(names, k) {
			return pusherErrorf(http.StatusBadRequest, "Unknown query parameter %q", k)
		}
	}
	return nil
}

// handleChannels lists the occupied channels, optionally those with a prefix, with their user
// counts when asked (presence- prefixes only, as Pusher).
func (a *pusherAPI) handleChannels(w http.ResponseWriter, r *http.Request) {
	if err := onlyQuery(r, "filter_by_prefix", "info"); err != nil {
		pusherFail(w, err)
		return
	}
	q := r.URL.Query()
	prefix := q.Get("filter_by_prefix")
	info, perr := parsePusherInfo(q.Get("info"), []string{"user_count"}, strings.HasPrefix(prefix, "presence-"))
	if perr != nil {
		pusherFail(w, perr)
		return
	}
	list, perr := a.pusherChannelList(r.Context(), prefix, info.users)
	if perr != nil {
		pusherFail(w, perr)
		return
	}
	out := map[string]map[string]int{}
	for _, ch := range list {
		attrs := map[string]int{}
		if info.users {
			attrs["user_count"] = ch.users
		}
		out[ch.name] = attrs
	}
	writeJSON(w, http.StatusOK, map[string]any{"channels": out})
}

// handleChannel tells whether a channel is occupied and, when asked, its user count (presence
// channels only) and subscription count (connections in it).
func (a *pusherAPI) handleChannel(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if err := checkPusherChannel(name); err != nil {
		pusherFail(w, err)
		return
	}
	if err := onlyQuery(r, "info"); err != nil {
		pusherFail(w, err)
		return
	}
	info, perr := parsePusherInfo(r.URL.Query().Get("info"), []string{"user_count", "subscription_count"}, strings.HasPrefix(name, "presence-"))
	if perr != nil {
		pusherFail(w, perr)
		return
	}
	users, count, perr := a.pusherMembers(r.Context(), name)
	if perr != nil {
		pusherFail(w, perr)
		return
	}
	out := map[string]any{"occupied": count > 0}
	if info.users {
		out["user_count"] = len(users)
	}
	if info.subscriptions {
		out["subscription_count"] = count
	}
	writeJSON(w, http.StatusOK, out)
}

// handleUsers lists the distinct users of a presence channel.
func (a *pusherAPI) handleUsers(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if err := checkPusherChannel(name); err != nil {
		pusherFail(w, err)
		return
	}
	if !strings.HasPrefix(name, "presence-") {
		pusherFail(w, pusherErrorf(http.StatusBadRequest, "Users can only be listed for presence channels, not %q", name))
		return
	}
	if err := onlyQuery(r); err != nil {
		pusherFail(w, err)
		return
	}
	users, _, perr := a.pusherMembers(r.Context(), name)
	if perr != nil {
		pusherFail(w, perr)
		return
	}
	type user struct {
		ID string `json:"id"`
	}
	out := make([]user, len(users))
	for i, u := range users {
		out[i] = user{u}
	}
	writeJSON(w, http.StatusOK, map[string]any{"users": out})
}

// pusherTerminateCode closes a terminated user's connections. pusher-js does not reconnect
// after a close code in 4000-4099; 4009 is Pusher's "connection is unauthorized".
const pusherTerminateCode = 4009

// handleTerminate closes every connection of a user, on every node: Pusher-mode and native
// ones alike, since both carry the user id the hub knows them by.
func (a *pusherAPI) handleTerminate(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if err := validateName(id, a.s.limits.MaxNameLen); err != nil {
		pusherFail(w, pusherErrorf(http.StatusBadRequest, "User id %v", err))
		return
	}
	if err := onlyQuery(r); err != nil {
		pusherFail(w, err)
		return
	}
	// The SDKs send "{}"; anything else in the body is a mistake worth an answer.
	if body, _ := io.ReadAll(r.Body); len(bytes.TrimSpace(body)) > 0 {
		var empty struct{}
		if err := decodeStrict(body, &empty); err != nil {
			pusherFail(w, pusherErrorf(http.StatusBadRequest, "Malformed JSON body: %v", err))
			return
		}
	}
	req := CloseRequest{Code: pusherTerminateCode, Reason: "connection terminated by the application"}
	if _, err := a.s.hub.CloseConnections(r.Context(), Targets{Users: []string{id}}, req, InitiatorAPI); err != nil {
		pusherFail(w, pusherErrorf(http.StatusBadGateway, "Closed on this node, but forwarding to the other nodes failed: %v", err))
		return
	}
	writeJSON(w, http.StatusOK, struct{}{})
}

// pusherFail writes a refusal as Pusher does: the status and a plain-text explanation.
func pusherFail(w http.ResponseWriter, e *pusherError) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(e.status)
	io.WriteString(w, e.msg+"\n")
}

// pusherChannel is one occupied channel as GET channels lists it.
type pusherChannel struct {
	name  string
	users int
}

// pusherChannels lists the occupied local channels whose name starts with prefix, sorted, with
// their distinct users counted when users is set.
func (h *hub) pusherChannels(prefix string, users bool) []pusherChannel {
	h.mu.RLock()
	defer h.mu.RUnlock()
	var out []pusherChannel
	for name, set := range h.channels {
		if !strings.HasPrefix(name, prefix) {
			continue
		}
		ch := pusherChannel{name: name}
		if users {
			distinct := make(map[string]struct{}, len(set))
			for _, m := range set {
				if m.user != "" {
					distinct[m.user] = struct{}{}
				}
			}
			ch.users = len(distinct)
		}
		out = append(out, ch)
	}
	slices.SortFunc(out, func(a, b pusherChannel) int { return strings.Compare(a.name, b.name) })
	return out
}
