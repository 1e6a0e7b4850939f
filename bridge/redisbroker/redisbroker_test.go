package redisbroker_test

import (
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/wsbridge/wsbridge/bridge"
	"github.com/wsbridge/wsbridge/bridge/brokertest"
	"github.com/wsbridge/wsbridge/bridge/redisbroker"
	"github.com/wsbridge/wsbridge/bridge/testkit"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// newBroker is a broker of the test's Redis with a short ping, so that a stale subscription is
// found within the suite's bounds.
func newBroker(t *testing.T, url string) *redisbroker.Broker {
	t.Helper()
	b, err := redisbroker.New(redisbroker.Options{URL: url, Prefix: "t", PingEvery: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

// The Redis broker passes the conformance suite against a real redis-server, fresh per subtest.
func TestConformance(t *testing.T) {
	brokertest.Run(t, func(t *testing.T) brokertest.Cluster {
		srv := testkit.StartRedis(t)
		return brokertest.Cluster{
			Node:  func(t *testing.T) bridge.Broker { return newBroker(t, srv.URL()) },
			Stop:  func(t *testing.T) { srv.Stop(t) },
			Start: func(t *testing.T) { srv.Start(t) },
			AppPublish: func(t *testing.T, payload []byte) {
				srv.Do(t, "PUBLISH", "t:publish", string(payload))
			},
		}
	})
}
