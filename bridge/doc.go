// Package bridge is wsbridge's core: it holds browsers' WebSocket connections for a PHP
// application, turns each connection's life into signed HTTP webhooks (open, message, close),
// keeps per-connection state for PHP (user id, channels, meta), and lets PHP push back through
// an internal HTTP API. docs/PROTOCOL.md is the contract with PHP.
//
// Where to look:
//
//	changing …                                        open
//	what PHP receives or may answer                   event.go, then webhook.go
//	the same JSON without reflection (hot path)       eventjson.go, replyjson.go
//	retries, backoff, PHP considered down             webhook.go, breaker.go
//	the HTTP connections to PHP, reading answers      hookconn.go, hookreply.go
//	direct FastCGI to PHP-FPM (fcgi:// URLs)          fcgi.go (URLs, params), fcgiconn.go (records)
//	a connection's life, whatever its transport       session.go
//	a new transport (SSE, Pusher): one file over      session.go (transport), delivery.go
//	the Pusher HTTP API (/apps/), request signing     pusherapi.go
//	Pusher-format webhooks (channel_occupied, ...)    pusherhook.go (hub.onOccupancy)
//	the WebSocket handshake, Accept options, upgrade  accept.go
//	Server-Sent Events: the request, events, the end  sse.go
//	channel history, positions, recovery, its API     history.go (history_memory.go: the store)
//	the Pusher protocol (pusher-js, Laravel Echo)     pusher.go (handshake, refusals), pusherproto.go (messages, presence)
//	connection limits, client address, proxies        limits.go
//	one socket's life: rate limit, pings, close       conn.go, writer.go (internal/wsraw/scan.go: fragments)
//	how frames reach the socket, permessage-deflate   writer.go, wsframe.go, internal/wsraw (conn_unix.go)
//	an idle connection's buffers, the read-ahead      accept.go (hijackedBuffers), internal/wsraw
//	RFC 6455 §5.5.1 (nothing after Close), 1007/1009  internal/wsraw/conn.go, conn.go
//	what the raw path assumes of coder/websocket      internal/wsraw/doc.go
//	close webhooks: pacing, waiting out PHP outages   closequeue.go
//	who receives a push                               hub.go, push.go, broker*.go
//	what the hub hands out, encoded once per push     delivery.go, hub.go (publishLocal)
//	a broker (Redis, NATS): one package, passes       bridge/brokertest (docs/brokers.md)
//	several nodes as one: state, liveness, node_lost  cluster.go (interfaces), cluster_server.go, bridge/redisbroker
//	plain HTTP to the app                             proxy.go
//	TLS on the public listener, certificate reload    tls.go
//	an environment variable                           config.go (configdoc.go renders the docs table)
//	metrics                                           metrics.go (docs/reliability.md lists them)
//	repeated log lines summed up                      logthrottle.go
//	the process: listeners, signals, shutdown order   cmd/wsbridge/main.go, server.go
//
// Goroutines per connection: one reads and calls PHP (started as the upgrade handler returns, so
// the handler's deep stack is not kept); a writer, started only while frames wait, owns every
// write through a bounded queue and hands a burst to the socket in one write; a timer pings
// every PING_INTERVAL to detect dead peers. A frame to a quiet connection with nothing queued
// skips the writer: the sender writes it with one non-blocking write, and only what the socket
// does not take goes to a writer. Nothing that delivers to a connection (a broadcast, the push
// API, another connection's reply) ever waits for it: a full queue closes the slow client
// instead.
// An SSE stream (sse.go) is one goroutine, its request's handler, which writes every event: an
// HTTP response, over HTTP/2 above all, cannot be handed to another goroutine as a socket can.
//
// The exported API is what a program embedding wsbridge needs, and no more (api_test.go keeps
// it to a list): LoadConfig reads a Config from the environment (ConfigError lists every bad
// value; ConfigUsage and ConfigVars are its manual); Listen opens the two listeners; New builds
// a Server over a Broker, whose Serve runs until its context ends and then shuts down in order
// (or mount PublicHandler and InternalHandler yourself and call Shutdown); NewLogThrottle sums
// up repeated log lines. A broker package implements Broker (optionally BrokerHealth,
// NodeRegistry, and for a cluster ClusterState, NodeLiveness and AppPublisher, with ConnRecord and
// the query types of cluster.go) and carries Envelopes, with their Publication, Targets and CloseRequest;
// MemoryBroker is the in-process one. The contract with PHP is there for Go programs on the
// other side of it: Event, Reply and Frame (the JSON bodies), the Header* names, Sign and
// Verify. Everything else, the hub above all, is reached only through the push API.
//
// bridge/testkit holds helpers shared by the tests of this module's packages, among them the
// raw-TCP WebSocket probe and the RFC 6455/7692 conformance cases (wsprobe.go, rfccases.go)
// that run in-process here and against the built binary in cmd/wsbridge.
package bridge
