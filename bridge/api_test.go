package bridge

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// publicAPI is the package's exported surface, on purpose: what a program embedding wsbridge
// (cmd/wsbridge, cmd/wsbridge-bench), a broker package (bridge/brokertest, later
// bridge/redisbroker) and a Go client of the PHP contract need. A name appears here only
// because something outside the package uses it; bridge/doc.go says what each part is for.
// Methods are listed as Type.Method, for exported types only (an exported method of an
// unexported type is not reachable from outside, whatever its name).
var publicAPI = []string{
	// Configuration: cmd/wsbridge loads it and prints its manual (-h); its tests list the
	// variables. The sections are exported so that a composite literal can name them.
	"BrokerConfig", "Config", "ConfigError", "ConfigError.Error", "ConfigUsage", "ConfigVar",
	"ConfigVars", "ConnConfig", "EnvPrefix", "LimitConfig", "ListenConfig", "LoadConfig",
	"ProcessConfig", "PushAPIConfig", "PushAPIConfig.InternalIsLocal", "PusherConfig", "SSEConfig", "TLSConfig",
	"WebhookConfig",

	// The server and its listeners.
	"Listen", "New", "Server", "Server.InternalHandler", "Server.Node", "Server.PublicHandler",
	"Server.Serve", "Server.Shutdown",

	// Logging: cmd/wsbridge wraps its handler.
	"LogThrottle", "LogThrottle.Enabled", "LogThrottle.Flush", "LogThrottle.Handle",
	"LogThrottle.WithAttrs", "LogThrottle.WithGroup", "NewLogThrottle",

	// Brokers: the interface, its optional interfaces, what crosses between nodes, and the
	// in-process broker.
	"Broker", "BrokerHealth", "CloseRequest", "Envelope", "EnvelopeVersion",
	"ErrEnvelopeVersion", "MemoryBroker", "MemoryBroker.Join", "MemoryBroker.Nodes",
	"MemoryBroker.Publish", "MemoryBroker.Run", "NewMemoryBroker", "NodeRegistry", "Op",
	"OpClose", "OpJoin", "OpLeave", "OpPublish", "Publication", "Targets",

	// Cluster brokers' optional interfaces (cluster.go) and what they carry.
	"AppPublisher", "ChannelPage", "ClusterState", "ClusterTotals", "ConnPage", "ConnQuery",
	"ConnRecord", "Heartbeat", "NodeLiveness",
	// History (history.go): a broker that keeps the cluster's history implements History; a
	// publication's Position crosses between nodes in its Envelope.
	"History", "HistoryConfig", "HistoryEntry", "HistoryPublisher", "Position",

	// The contract with PHP (docs/PROTOCOL.md): webhook bodies and headers, replies, signatures.
	"Event", "EventClose", "EventMessage", "EventOpen", "EventType", "Frame", "Frame.MarshalJSON",
	"Frame.UnmarshalJSON", "HandshakeRequest", "HeaderAttempt", "HeaderConnection",
	"HeaderEvent", "HeaderEventID", "HeaderSignature", "Initiator", "InitiatorAPI",
	"InitiatorClient", "InitiatorPHP", "InitiatorServer", "InitiatorShutdown",
	"InitiatorNodeLost", "InitiatorSlowConsumer", "Reply", "ResumeRequest", "Sign", "Verify",

	// Delivery stays exported only while the raw-frame fast path (wsframe.go) moves into
	// bridge/internal/wsraw; it is what the hub hands to its recipients, not an embedding API.
	"Delivery",
}

// TestPublicAPI fails when an exported identifier appears that is not in publicAPI, or one
// listed there is gone: widening (or narrowing) the API is a decision, made by editing the
// list and bridge/doc.go, not a side effect of naming a helper with a capital letter.
func TestPublicAPI(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	var got []string
	for _, name := range files {
		// Every non-test file, whatever its build constraints (cork_unix.go and cork_other.go
		// both count), since a name exported on one platform is exported.
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		src, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		f, err := parser.ParseFile(fset, name, src, parser.SkipObjectResolution)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, exportedNames(f)...)
	}
	slices.Sort(got)
	got = slices.Compact(got)
	want := slices.Sorted(slices.Values(publicAPI))
	for i := 1; i < len(want); i++ {
		if want[i] == want[i-1] {
			t.Errorf("publicAPI lists %s twice", want[i])
		}
	}
	for _, n := range got {
		if _, ok := slices.BinarySearch(want, n); !ok {
			t.Errorf("%s is exported but not in publicAPI: unexport it, or add it there and say in bridge/doc.go what an embedding program uses it for", n)
		}
	}
	for _, n := range want {
		if _, ok := slices.BinarySearch(got, n); !ok {
			t.Errorf("publicAPI lists %s, which the package no longer exports: remove it from the list", n)
		}
	}
}

// exportedNames returns f's exported top-level names, and Type.Method for the exported methods
// of exported types.
func exportedNames(f *ast.File) []string {
	var names []string
	for _, d := range f.Decls {
		switch d := d.(type) {
		case *ast.FuncDecl:
			if !d.Name.IsExported() {
				continue
			}
			if d.Recv == nil {
				names = append(names, d.Name.Name)
				continue
			}
			if recv := receiverType(d.Recv.List[0].Type); ast.IsExported(recv) {
				names = append(names, recv+"."+d.Name.Name)
			}
		case *ast.GenDecl:
			for _, s := range d.Specs {
				switch s := s.(type) {
				case *ast.TypeSpec:
					if s.Name.IsExported() {
						names = append(names, s.Name.Name)
					}
				case *ast.ValueSpec:
					for _, n := range s.Names {
						if n.IsExported() {
							names = append(names, n.Name)
						}
					}
				}
			}
		}
	}
	return names
}

// receiverType names a method's receiver type: T, *T, T[P] or *T[P].
func receiverType(e ast.Expr) string {
	for {
		switch x := e.(type) {
		case *ast.StarExpr:
			e = x.X
		case *ast.IndexExpr:
			e = x.X
		case *ast.IndexListExpr:
			e = x.X
		case *ast.Ident:
			return x.Name
		default:
			return ""
		}
	}
}

// TestExportedNames checks the collector on the shapes it must see: without it, a collector
// that found nothing would pass TestPublicAPI with an empty list.
func TestExportedNames(t *testing.T) {
	const src = `package p
type T struct{}
type u struct{}
type G[K any] struct{}
func (T) M() {}
func (*T) m() {}
func (u) M() {}
func (*G[K]) N() {}
func F() {}
func f() {}
var V, w = 1, 2
const (C = iota; d)
`
	f, err := parser.ParseFile(token.NewFileSet(), "p.go", src, parser.SkipObjectResolution)
	if err != nil {
		t.Fatal(err)
	}
	got := exportedNames(f)
	slices.Sort(got)
	want := []string{"C", "F", "G", "G.N", "T", "T.M", "V"}
	if !slices.Equal(got, want) {
		t.Errorf("exportedNames = %q, want %q", got, want)
	}
}
