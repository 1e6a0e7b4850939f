package bridge_test

import (
	"testing"

	"github.com/wsbridge/wsbridge/bridge"
	"github.com/wsbridge/wsbridge/bridge/brokertest"
)

// The memory broker passes the conformance suite every broker must; it has no engine, so the
// engine subtest is skipped.
func TestMemoryBrokerConformance(t *testing.T) {
	brokertest.Run(t, func(t *testing.T) brokertest.Cluster {
		b := bridge.NewMemoryBroker()
		return brokertest.Cluster{Node: func(*testing.T) bridge.Broker { return b }}
	})
}
