package bridge

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The hostile FastCGI suite: the hostile webhook suite's clients and checks (runHostile), with
// a raw FastCGI server in place of the HTTP one that breaks the record layer in the ways a
// broken or malicious PHP-FPM could. As there, every reply names the connection it answers and
// a poison reply names "admin", so a misplaced reply shows as a client or an event carrying
// another connection's id.

// fcgiAnswer builds a first attempt's bytes from the request id, the event's own CGI reply
// and a poison one.
type fcgiAnswer func(id uint16, real, poison string) string

// stdoutRecs is a CGI response as one stdout stream and the end of the request.
func stdoutRecs(id uint16, cgi string) string {
	return rec(fcgiStdout, id, cgi, 0) + rec(fcgiStdout, id, "", 0) + endRec(id, 0)
}

// cgiReplies are the request's own CGI reply and a poison one, as replies builds them for HTTP.
func cgiReplies(c hostileCall) (real, poison string) {
	r, p := replies(c, false)
	toCGI := func(raw string) string {
		return "Status: 200 OK\r\nContent-Type: application/json\r\n\r\n" + bodyOf(raw)
	}
	return toCGI(r), toCGI(p)
}

type fcgiHostileCase struct {
	name   string
	first  firstAnswer
	answer fcgiAnswer
	// stream writes a first attempt's answer itself (the huge header).
	stream func(w io.Writer, id uint16)
	// trickle writes the answer a byte at a time.
	trickle bool
	// idlePoison follows a first answer with a poison response in a write of its own.
	idlePoison bool
	// stale answers each request with the previous one's answer, under its request id.
	stale bool
	// oneShot closes the connection after every answer, as a PHP-FPM that ignores
	// FCGI_KEEP_CONN (or a child that pm.max_requests ends) does.
	oneShot bool
	// hangUp closes the connection after a first attempt's answer.
	hangUp bool
}

var fcgiHostileCases = []fcgiHostileCase{
	{name: "well-formed answer", first: taken, answer: func(id uint16, real, _ string) string { return stdoutRecs(id, real) }},
	{name: "padded, split records, stderr between", first: taken, answer: func(id uint16, real, _ string) string {
		return rec(fcgiStdout, id, real[:10], 3) + rec(fcgiStderr, id, "PHP Notice: x", 5) + rec(fcgiStdout, id, real[10:], 7) +
			rec(fcgiStdout, id, "", 1) + endRec(id, 0)
	}},
	{name: "no empty stdout record, application status 255", first: taken, answer: func(id uint16, real, _ string) string {
		return rec(fcgiStdout, id, real, 0) + rec(fcgiEndRequest, id, "\x00\x00\x00\xff\x00\x00\x00\x00", 0)
	}},
	{name: "answer a byte at a time (slowloris)", first: taken, trickle: true, answer: func(id uint16, real, _ string) string { return stdoutRecs(id, real) }},
	{name: "connection closed after every answer", first: taken, oneShot: true, answer: func(id uint16, real, _ string) string { return stdoutRecs(id, real) }},
	{name: "bad version", answer: func(id uint16, _, poison string) string {
		r := stdoutRecs(id, poison)
		return "\x02" + r[1:]
	}},
	{name: "unknown record type", answer: func(id uint16, _, poison string) string {
		return rec(11, id, "\x06\x00\x00\x00\x00\x00\x00\x00", 0) + stdoutRecs(id, poison)
	}},
	{name: "management record", answer: func(id uint16, _, poison string) string {
		return rec(10, 0, "", 0) + stdoutRecs(id, poison)
	}},
	{name: "other request id", answer: func(id uint16, _, poison string) string { return stdoutRecs(id+1, poison) }},
	{name: "earlier request id", answer: func(id uint16, _, poison string) string { return stdoutRecs(id-1, poison) }},
	{name: "short record, then closed", hangUp: true, answer: func(id uint16, real, _ string) string { return rec(fcgiStdout, id, real, 0)[:20] }},
	{name: "short header, then closed", hangUp: true, answer: func(id uint16, real, _ string) string { return rec(fcgiStdout, id, real, 0)[:5] }},
	{name: "padding lies", answer: func(id uint16, _, poison string) string {
		r := rec(fcgiStdout, id, poison, 0)
		return r[:6] + "\x10\x00" + r[8:] + stdoutRecs(id, poison)
	}},
	{name: "length lies", answer: func(id uint16, _, poison string) string {
		r := []byte(rec(fcgiStdout, id, poison, 0))
		r[5] -= 20 // the record's end falls inside the body; the rest parses as records
		return string(r) + stdoutRecs(id, poison)
	}},
	{name: "end-request too short", answer: func(id uint16, real, poison string) string {
		return rec(fcgiStdout, id, real, 0) + rec(fcgiEndRequest, id, "\x00\x00", 0) + stdoutRecs(id, poison)
	}},
	{name: "overloaded", answer: func(id uint16, _, _ string) string { return endRec(id, 2) }},
	{name: "stdout after the end of stdout", answer: func(id uint16, real, poison string) string {
		return rec(fcgiStdout, id, real, 0) + rec(fcgiStdout, id, "", 0) + rec(fcgiStdout, id, poison, 0) + endRec(id, 0)
	}},
	{name: "empty answer", answer: func(id uint16, _, _ string) string { return endRec(id, 0) }},
	{name: "CGI head without its end", answer: func(id uint16, _, _ string) string { return stdoutRecs(id, "Status: 200 OK\r\n") }},
	{name: "too many header fields", answer: func(id uint16, real, _ string) string {
		var sb strings.Builder
		for i := range maxReplyHeaderFields + 1 {
			sb.WriteString("X-F" + strconv.Itoa(i) + ": 1\r\n")
		}
		return stdoutRecs(id, sb.String()+real)
	}},
	// What follows the end of a request is no answer to anything: in the same write it is in
	// the buffer when the end is read; in a later one the idle probe or the next request's
	// id finds it. Either way the event is answered by its own reply or retried.
	{name: "second response after the end", first: either, answer: func(id uint16, real, poison string) string {
		return stdoutRecs(id, real) + stdoutRecs(id, poison)
	}},
	{name: "stdout after the end", first: either, answer: func(id uint16, real, poison string) string {
		return stdoutRecs(id, real) + rec(fcgiStdout, id, poison, 0)
	}},
	{name: "second response before the next request", first: either, idlePoison: true, answer: func(id uint16, real, _ string) string {
		return stdoutRecs(id, real)
	}},
	{name: "stale answer under the previous id", first: either, stale: true},
}

// fcgiHugeHeader streams a 48 MiB header line in stdout records.
func fcgiHugeHeader(w io.Writer, id uint16) {
	if _, err := io.WriteString(w, rec(fcgiStdout, id, "Status: 200 OK\r\nX-Huge: ", 0)); err != nil {
		return
	}
	chunk := []byte(rec(fcgiStdout, id, strings.Repeat("a", 60000), 0)) // written as is: no copy per write
	for range 48 << 20 / 60000 {
		if _, err := w.Write(chunk); err != nil {
			return
		}
	}
	io.WriteString(w, stdoutRecs(id, "\r\n\r\n{}"))
}

func TestHostileFastCGIServers(t *testing.T) {
	cases := append(fcgiHostileCases, fcgiHostileCase{name: "48 MiB header line", stream: fcgiHugeHeader})
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var before runtime.MemStats
			runtime.ReadMemStats(&before)
			h := newHostileFCGI(t, tc)
			h.firstOK = tc.first != refused
			runHostile(t, h, tc.first)
			if tc.stream != nil {
				var after runtime.MemStats
				runtime.ReadMemStats(&after)
				if grew := after.TotalAlloc - before.TotalAlloc; grew > 16<<20 {
					t.Errorf("%d MiB allocated while PHP-FPM sent 48 MiB header lines; the bound is %d bytes", grew>>20, maxReplyHeadBytes)
				}
			}
		})
	}
}

// newHostileFCGI serves tc on a FastCGI listener, recording into a hostilePHP so that
// runHostile's checks apply as they are.
func newHostileFCGI(t *testing.T, tc fcgiHostileCase) *hostilePHP {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h := &hostilePHP{t: t, ln: ln, url: "fcgi://" + ln.Addr().String() + "/srv/app/hook.php",
		changed: make(chan struct{}, 1), open: map[net.Conn]bool{}}
	h.wg.Add(1)
	go h.serve(func(nc net.Conn) { serveHostileFCGI(h, tc, nc) })
	t.Cleanup(h.stop)
	return h
}

// readFCGIRequest reads one request as PHP-FPM would: begin, params, stdin.
func readFCGIRequest(br *bufio.Reader) (id uint16, keepConn bool, params map[string]string, body []byte, err error) {
	r, err := readFCGIRecord(br)
	if err != nil {
		return 0, false, nil, nil, err
	}
	if r.typ != fcgiBeginRequest || len(r.content) != 8 || r.content[1] != fcgiResponder {
		return 0, false, nil, nil, errors.New("no responder begin-request")
	}
	id, keepConn = r.id, r.content[2]&fcgiKeepConn != 0
	var ps []byte
	for {
		r, err := readFCGIRecord(br)
		if err != nil {
			return 0, false, nil, nil, err
		}
		if r.id != id {
			return 0, false, nil, nil, errors.New("request records with two ids")
		}
		switch {
		case r.typ == fcgiParams && len(r.content) > 0:
			ps = append(ps, r.content...)
		case r.typ == fcgiParams:
			if params, err = parseFCGIParams(ps); err != nil {
				return 0, false, nil, nil, err
			}
		case r.typ == fcgiStdin && len(r.content) > 0:
			body = append(body, r.content...)
		case r.typ == fcgiStdin:
			return id, keepConn, params, body, nil
		default:
			return 0, false, nil, nil, errors.New("unexpected record type")
		}
	}
}

func serveHostileFCGI(h *hostilePHP, tc fcgiHostileCase, nc net.Conn) {
	br := bufio.NewReader(nc)
	last := "" // the previous answer on this connection, for stale
	for {
		id, keep, params, body, err := readFCGIRequest(br)
		if err != nil {
			return
		}
		c := hostileCall{typ: params["HTTP_WSBRIDGE_EVENT"], conn: params["HTTP_WSBRIDGE_CONNECTION"], event: params["HTTP_WSBRIDGE_EVENT_ID"]}
		c.attempt, _ = strconv.Atoi(params["HTTP_WSBRIDGE_ATTEMPT"])
		var ev Event
		if json.Unmarshal(body, &ev) != nil || ev.ConnectionID != c.conn || string(ev.Type) != c.typ || !keep ||
			params["CONTENT_LENGTH"] != strconv.Itoa(len(body)) || params["SCRIPT_FILENAME"] != "/srv/app/hook.php" {
			h.t.Errorf("FastCGI request does not match its params (keep-conn %v): %v %q", keep, params, body)
			return
		}
		c.user = ev.UserID
		real, poison := cgiReplies(c)
		out := stdoutRecs(id, real)
		switch {
		case tc.stale:
			// The previous request's answer, under its own id, for this one.
			out, last = last, stdoutRecs(id, real)
			if out == "" {
				out = last
			}
		case c.attempt == 1 && tc.stream != nil:
			tc.stream(nc, id)
			h.record(c)
			return // the bridge hangs up on it
		case c.attempt == 1:
			out = tc.answer(id, real, poison)
		}
		if tc.trickle && c.attempt == 1 {
			for i := 0; i < len(out) && err == nil; i++ {
				_, err = nc.Write([]byte{out[i]})
			}
		} else {
			_, err = io.WriteString(nc, out)
		}
		if err == nil && tc.idlePoison && c.attempt == 1 {
			_, err = io.WriteString(nc, stdoutRecs(id, poison))
		}
		h.record(c)
		if err != nil || tc.oneShot || tc.hangUp && c.attempt == 1 {
			return
		}
	}
}

// A PHP-FPM that stops answering mid-record (slowloris) holds the attempt only until its
// deadline: the exchange fails, the connection is closed, and nothing of it is kept.
func TestFastCGIStalledAnswer(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	done := make(chan struct{})
	go func() {
		defer close(done)
		nc, err := ln.Accept()
		if err != nil {
			return
		}
		defer nc.Close()
		id, _, _, _, err := readFCGIRequest(bufio.NewReader(nc))
		if err != nil {
			return
		}
		io.WriteString(nc, rec(fcgiStdout, id, "Status: 200 OK\r\n\r\n{}", 0)[:11])
		io.Copy(io.Discard, nc) // until the bridge hangs up
	}()
	u := mustParseURL(t, "fcgi://"+ln.Addr().String()+"/srv/hook.php")
	target, err := parseFCGIURL(u)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	var c fcgiConn
	_, _, err = c.do(ctx, target, &hookRequest{body: []byte(`{}`)}, 1<<20, nil)
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("do = %v, want a timeout", err)
	}
	if c.nc != nil {
		t.Error("the stalled connection was kept")
	}
	select {
	case <-done:
	case <-time.After(waitLimit):
		t.Fatal("the server's connection was not closed")
	}
}
