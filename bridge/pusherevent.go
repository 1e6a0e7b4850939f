package bridge

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

// pusherMaxEventName is Pusher's limit on an event name, in bytes.
const pusherMaxEventName = 200

// validatePusher checks a publication's "event": empty (a native push, whose Pusher-mode
// recipients get wsbridge's default event name, pusherproto.go) or a name a Pusher client can be
// handed, with text data (a Pusher event's data is a string). The pusher: and pusher_internal:
// prefixes are the protocol's own: a push that could send them would let PHP or an API caller
// forge a subscription_succeeded or member_added to every subscriber.
func (p *Publication) validatePusher() error {
	name := p.Event
	switch {
	case name != "" && p.DataBase64 != nil:
		return errors.New(`"event" goes with "data" (text): a Pusher event's data is a string, not "data_base64"`)
	case name == "":
		return nil
	case len(name) > pusherMaxEventName:
		return fmt.Errorf(`"event": longer than %d bytes`, pusherMaxEventName)
	case !utf8.ValidString(name):
		return errors.New(`"event": not valid UTF-8`)
	case strings.HasPrefix(name, "pusher:") || strings.HasPrefix(name, "pusher_internal:"):
		return fmt.Errorf(`"event": %q: the pusher: and pusher_internal: prefixes are reserved for the protocol`, name)
	}
	return nil
}
