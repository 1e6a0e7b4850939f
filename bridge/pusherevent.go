package bridge

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

// pusherMaxEventName is Pusher's limit on an event name, in bytes.
const pusherMaxEventName = 200

// validatePusherEvent checks a publication's "event": empty (a native push, whose Pusher-mode
// recipients get wsbridge's default event name) or a name a Pusher client can be handed. The
// pusher: and pusher_internal: prefixes are the protocol's own: a push that could send them would
// let PHP or an API caller forge a subscription_succeeded or member_added to every subscriber.
func validatePusherEvent(name string) error {
	switch {
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
