// Package wsraw is the bridge's raw WebSocket data path: the socket coder/websocket (v1.8.15) is
// given after the upgrade (Conn), through which the bridge also writes the data frames it
// encodes itself (AppendFrame, Deflate), corked into one write per burst or written without
// waiting (TryWrite); the RFC 6455 §5.5.1 rule that nothing follows a Close frame; and a scanner
// of the frame headers a client sends (FrameScan).
//
// It depends on how coder/websocket v1.8.15 uses the net.Conn it hijacks. Each assumption is
// written where it is relied on; in short:
//   - every write it makes goes through Conn.Write: the 101 answer, then each control frame
//     (ping, pong, close) in one Write call of the whole frame, at a frame boundary, so a Write
//     never splits a frame of ours and a Close frame is recognised by its first byte;
//   - its Close frame therefore passes through Write before anything can follow it;
//   - at the upgrade it reads first what net/http had buffered with the request (Hijack's
//     bufio.Reader), then the Conn itself, through Conn.Read;
//   - data frames it never writes here: the bridge does not call its Writer or Write.
//
// A change of coder/websocket version must recheck these (TestPingsBetweenCorkedBursts and the
// conformance suite in package bridge exercise them). The package imports nothing of bridge:
// what it needs of a connection comes through Owner.
package wsraw
