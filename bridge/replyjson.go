package bridge

import (
	"unicode/utf8"
)

// decodeReplyFast decodes the replies PHP sends most, {} and {"send": [strings]} (an echo, an
// answer to the sender), without encoding/json's reflection: its strict decoder cost about
// 10,000 instructions per message reply (BenchmarkMessagePath under callgrind,
// docs/benchmarks.md), this a few hundred. It reports false for anything else, or anything in
// doubt (a string with an escaped surrogate or bytes that are not UTF-8, which encoding/json
// replaces), and then r is untouched and decodeStrict decides, with its errors: the result is
// always what decodeStrict gives (TestDecodeReplyFastIsStrict).
func decodeReplyFast(body []byte, r *Reply) bool {
	p := jsonSkipSpace(body, 0)
	if p >= len(body) || body[p] != '{' {
		return false
	}
	p = jsonSkipSpace(body, p+1)
	if p < len(body) && body[p] == '}' {
		return jsonSkipSpace(body, p+1) == len(body)
	}
	const key = `"send"`
	if len(body)-p < len(key) || string(body[p:p+len(key)]) != key {
		return false
	}
	p = jsonSkipSpace(body, p+len(key))
	if p >= len(body) || body[p] != ':' {
		return false
	}
	p = jsonSkipSpace(body, p+1)
	if p >= len(body) || body[p] != '[' {
		return false
	}
	send := []Frame{}
	p = jsonSkipSpace(body, p+1)
	if p < len(body) && body[p] == ']' {
		p++
	} else {
		for {
			data, next, ok := jsonString(body, p)
			if !ok {
				return false
			}
			send = append(send, Frame{Data: data})
			p = jsonSkipSpace(body, next)
			if p >= len(body) {
				return false
			}
			if body[p] == ']' {
				p++
				break
			}
			if body[p] != ',' {
				return false
			}
			p = jsonSkipSpace(body, p+1)
		}
	}
	p = jsonSkipSpace(body, p)
	if p >= len(body) || body[p] != '}' || jsonSkipSpace(body, p+1) != len(body) {
		return false
	}
	r.Send = send
	return true
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
