package bridge

import (
	"unicode/utf8"
)

// decodeReplyFast decodes the replies PHP sends most without encoding/json's reflection:
// objects whose members are "send", "join" and "leave" (arrays of strings) and "user_id" (a
// string), each at most once: an echo, an answer to the sender, an open that names the user
// and its channels. encoding/json's strict decoder cost about 10,000 instructions per message
// reply (BenchmarkMessagePath under callgrind, docs/benchmarks.md) and a tenth of the bridge's
// CPU per handshake; this costs a few hundred. It reports false for anything else, or anything
// in doubt (another member, null, a key in other letter case, a string with an escaped
// surrogate or bytes that are not UTF-8, which encoding/json replaces), and then r is untouched
// and decodeStrict decides, with its errors: the result is always what decodeStrict gives
// (TestDecodeReplyFastIsStrict).
func decodeReplyFast(body []byte, r *Reply) bool {
	var out Reply
	p := jsonSkipSpace(body, 0)
	if p >= len(body) || body[p] != '{' {
		return false
	}
	p = jsonSkipSpace(body, p+1)
	if p < len(body) && body[p] == '}' {
		if jsonSkipSpace(body, p+1) != len(body) {
			return false
		}
		*r = out
		return true
	}
	for {
		key, next, ok := jsonKey(body, p)
		if !ok {
			return false
		}
		p = jsonSkipSpace(body, next)
		if p >= len(body) || body[p] != ':' {
			return false
		}
		p = jsonSkipSpace(body, p+1)
		switch string(key) {
		case "send":
			if out.Send != nil {
				return false
			}
			out.Send = []Frame{}
			if p, ok = jsonStrings(body, p, func(b []byte) { out.Send = append(out.Send, Frame{Data: b}) }); !ok {
				return false
			}
		case "join", "leave":
			dst := &out.Join
			if key[0] == 'l' {
				dst = &out.Leave
			}
			if *dst != nil {
				return false
			}
			*dst = []string{}
			if p, ok = jsonStrings(body, p, func(b []byte) { *dst = append(*dst, string(b)) }); !ok {
				return false
			}
		case "user_id":
			if out.UserID != nil {
				return false
			}
			var b []byte
			if b, p, ok = jsonString(body, p); !ok {
				return false
			}
			u := string(b)
			out.UserID = &u
		default:
			return false
		}
		p = jsonSkipSpace(body, p)
		if p >= len(body) {
			return false
		}
		if body[p] == '}' {
			break
		}
		if body[p] != ',' {
			return false
		}
		p = jsonSkipSpace(body, p+1)
	}
	if jsonSkipSpace(body, p+1) != len(body) {
		return false
	}
	*r = out
	return true
}

// jsonStrings decodes the JSON array of strings at b[p], handing each to add, and returns the
// index after it.
func jsonStrings(b []byte, p int, add func([]byte)) (next int, ok bool) {
	if p >= len(b) || b[p] != '[' {
		return 0, false
	}
	p = jsonSkipSpace(b, p+1)
	if p < len(b) && b[p] == ']' {
		return p + 1, true
	}
	for {
		s, next, ok := jsonString(b, p)
		if !ok {
			return 0, false
		}
		add(s)
		p = jsonSkipSpace(b, next)
		if p >= len(b) {
			return 0, false
		}
		if b[p] == ']' {
			return p + 1, true
		}
		if b[p] != ',' {
			return 0, false
		}
		p = jsonSkipSpace(b, p+1)
	}
}

// jsonKey is jsonString for a member name, without a copy when nothing in it is escaped (the
// result then points into b, and is only compared).
func jsonKey(b []byte, p int) (key []byte, next int, ok bool) {
	if p < len(b) && b[p] == '"' {
		for i := p + 1; i < len(b); i++ {
			switch c := b[i]; {
			case c == '"':
				return b[p+1 : i], i + 1, true
			case c == '\\' || c < 0x20 || c >= 0x80:
				return jsonString(b, p)
			}
		}
	}
	return jsonString(b, p)
}

// jsonSkipSpace returns the index of the first byte at or after p that is not JSON white space.
func jsonSkipSpace(b []byte, p int) int {
	for p < len(b) && (b[p] == ' ' || b[p] == '\t' || b[p] == '\n' || b[p] == '\r') {
		p++
	}
	return p
}

// jsonString decodes the JSON string at b[p], returning its bytes and the index after it. It
// gives up (ok false) where encoding/json would refuse it or change it on its own terms: a
// control character, a bad escape, an escaped surrogate, bytes that are not UTF-8.
func jsonString(b []byte, p int) (data []byte, next int, ok bool) {
	if p >= len(b) || b[p] != '"' {
		return nil, 0, false
	}
	p++
	start := p
	for p < len(b) { // the common case: nothing escaped, no copy to make but the result
		c := b[p]
		if c == '"' {
			if !utf8.Valid(b[start:p]) {
				return nil, 0, false
			}
			return append(make([]byte, 0, p-start), b[start:p]...), p + 1, true
		}
		if c == '\\' || c < 0x20 {
			break
		}
		p++
	}
	out := append(make([]byte, 0, p-start+16), b[start:p]...)
	for p < len(b) {
		c := b[p]
		switch {
		case c == '"':
			if !utf8.Valid(out) {
				return nil, 0, false
			}
			return out, p + 1, true
		case c < 0x20:
			return nil, 0, false
		case c != '\\':
			out = append(out, c)
			p++
			continue
		}
		if p+1 >= len(b) {
			return nil, 0, false
		}
		switch e := b[p+1]; e {
		case '"', '\\', '/':
			out = append(out, e)
		case 'b':
			out = append(out, '\b')
		case 'f':
			out = append(out, '\f')
		case 'n':
			out = append(out, '\n')
		case 'r':
			out = append(out, '\r')
		case 't':
			out = append(out, '\t')
		case 'u':
			if p+6 > len(b) {
				return nil, 0, false
			}
			var r rune
			for _, h := range b[p+2 : p+6] {
				var d byte
				switch {
				case '0' <= h && h <= '9':
					d = h - '0'
				case 'a' <= h && h <= 'f':
					d = h - 'a' + 10
				case 'A' <= h && h <= 'F':
					d = h - 'A' + 10
				default:
					return nil, 0, false
				}
				r = r<<4 | rune(d)
			}
			if 0xD800 <= r && r <= 0xDFFF {
				return nil, 0, false // a surrogate pair, or a lone one: encoding/json's rules
			}
			out = utf8.AppendRune(out, r)
			p += 6
			continue
		default:
			return nil, 0, false
		}
		p += 2
	}
	return nil, 0, false
}
