// Package bridge is wsbridge's core: it holds browsers' WebSocket connections for a PHP
// application, turns each connection's life into signed HTTP webhooks (open, message, close),
// keeps per-connection state for PHP (user id, channels, meta), and lets PHP push back through
// an internal HTTP API. docs/PROTOCOL.md is the contract with PHP.
//
// Where to look:
//
//	changing …                                        open
//	what PHP receives or may answer                   event.go, then webhook.go
//	the handshake, origins, subprotocols              accept.go
//	one socket's life: limits, pings, close           conn.go, writer.go
//	who receives a push                               hub.go, push.go, broker*.go
//	plain HTTP to the app                             proxy.go
//	an environment variable                           config.go (configdoc.go renders the docs table)
//	the process: listeners, signals, shutdown order   cmd/wsbridge/main.go, server.go
//
// Goroutines per connection: one reads and calls PHP (started as the upgrade handler returns, so
// the handler's deep stack is not kept); a writer,
// started only while frames wait, owns every write through a bounded queue; a timer pings every
// PING_INTERVAL to detect dead peers. Nothing that delivers to a connection (a broadcast, the
// push API, another connection's reply) ever waits for it: a full queue closes the slow client
// instead.
package bridge
