package wsraw

import (
	"go/parser"
	"go/token"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestImportsNothingOfBridge: the raw path is fenced off from package bridge; what it needs of a
// connection comes through Owner. Its tests may use bridge/testkit, which is not bridge.
func TestImportsNothingOfBridge(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil || len(files) == 0 {
		t.Fatalf("no Go files found: %v", err)
	}
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(token.NewFileSet(), name, nil, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		for _, imp := range f.Imports {
			path, _ := strconv.Unquote(imp.Path.Value)
			if strings.HasPrefix(path, "github.com/wsbridge/wsbridge/") {
				t.Errorf("%s imports %s: wsraw must import nothing of this module", name, path)
			}
		}
	}
}
