package bridge

// Delivery is what the hub hands to its clients: one message's payload and, once a publication
// has made them, its encodings for the transports that need them. It is apart from Frame, which
// is only what PHP sends (event.go): what a transport writes, and how a fan-out is paced, is no
// part of the contract.
//
// A publication is encoded once, by the hub, before it is handed out (hub.publishLocal), however
// many recipients it has and on however many goroutines they are sent to (sendEach): every
// recipient gets a copy of the same Delivery and shares its encoded bytes, which nobody writes
// to after that. A Delivery made for one connection (a webhook reply's frame, newDelivery) has
// no encoding yet; its one recipient encodes it when it writes it, so nothing is encoded for a
// transport that does not take it.
//
// Deliveries are passed by value to every recipient and wait by value in send queues, so the
// fields are packed: the two flags and wsZ share one word (56 bytes in all). A transport that
// needs an encoding of its own (an SSE event, a Pusher envelope) adds a field for it here and
// has the hub make it in publishLocal next to the WebSocket ones; its Send then picks the field.
type Delivery struct {
	Binary bool
	// queue asks the client to leave the delivery to its writer rather than write it on the
	// sender's goroutine: the hub sets it on a big publication while publications outrun the
	// sockets, when deliveries pile up per connection and the writer sends them in bursts
	// (hub.publishLocal, conn.Send).
	queue bool
	// wsZ says where in ws the frame compressed for permessage-deflate (RFC 7692) begins:
	// 0, none made; -1, compressing would not make it smaller (wsframe.go).
	wsZ  int32
	Data []byte
	// ws is the WebSocket frame as sent, when already encoded (wsframe.go), followed by its
	// compressed form when wsZ > 0.
	ws []byte
	// pusher is the publication as Pusher-mode recipients get it, its Pusher envelope encoded
	// (hub.publicationDelivery, pusherproto.go); nil outside the Pusher mode. A pointer, so
	// that the Pusher mode costs every delivery 8 bytes, not another 56.
	pusher *Delivery
}

// newDelivery wraps a frame PHP sent, not yet encoded for any transport.
func newDelivery(f Frame) Delivery { return Delivery{Binary: f.Binary, Data: f.Data} }
