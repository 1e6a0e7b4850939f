module github.com/wsbridge/wsbridge

go 1.26.0

require (
	github.com/caarlos0/env/v11 v11.4.2
	github.com/coder/websocket v1.8.15
)

require go.uber.org/goleak v1.3.0
