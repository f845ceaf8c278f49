package outside_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// The public subpackages, and what each must not depend on.
var public = map[string][]string{
	"dispatcher": {"github.com/relayq/relay/internal/"},
	"lease":      {"github.com/relayq/relay/internal/"},
	// listener and backoff know nothing of jobs.
	"listener": {"github.com/relayq/relay/internal/", "github.com/relayq/relay/dispatcher", "github.com/relayq/relay/lease"},
	"backoff":  {"github.com/relayq/relay/internal/", "github.com/relayq/relay/dispatcher", "github.com/relayq/relay/lease"},
}

// A module other than relay's builds and vets a program that uses dispatcher, lease,
// listener and backoff through their exported API only (testdata/outside/main.go): a
// dispatcher on an in-memory Claimer, a keeper and a rescuer on in-memory leases. A
// configuration that needs an internal/ type cannot be filled in from there: naming the
// type fails with "use of internal package", as the control at the end shows. A public
// package may import internal/ unseen (the rule allows it within relay's tree), so their
// dependencies are checked too.
func TestPublicPackagesBuildOutsideTheModule(t *testing.T) {
	t.Parallel()
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the go command is needed to build a module outside relay's: %v", err)
	}
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	main, err := os.ReadFile(filepath.Join("testdata", "outside", "main.go"))
	if err != nil {
		t.Fatal(err)
	}
	sum, err := os.ReadFile(filepath.Join(root, "go.sum"))
	if err != nil {
		t.Fatal(err)
	}
	// The builds below run in go commands of their own, whose inputs go test's cache does
	// not see: the files the test reads itself are what make a change run it again.
	for _, f := range append([]string{"go.mod"}, sources(t, root)...) {
		if _, err := os.ReadFile(filepath.Join(root, f)); err != nil {
			t.Fatal(err)
		}
	}
	dir := t.TempDir()
	write := func(name, content string) {
		t.Helper()
		path := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("go.mod", "module example.com/outside\n\ngo 1.26\n\n"+
		"require github.com/relayq/relay v0.0.0\n\n"+
		"replace github.com/relayq/relay => "+root+"\n")
	// The dependencies are the main module's, already in the module cache: nothing is
	// downloaded, and their checksums are the main module's. But the outside module loads
	// the whole module graph, and relay's own builds read only part of it (not the go.mod of
	// a dependency of a dependency that predates graph pruning, such as testify's for
	// pgpassfile): downloading relay's dependencies and listing the graph in relay's module
	// fetch what is missing, through the configured proxy, so that a fresh module cache
	// passes too.
	for _, args := range [][]string{{"mod", "download"}, {"list", "-m", "all"}} {
		fetch := exec.Command(goTool, args...)
		fetch.Dir = root
		if out, err := fetch.CombinedOutput(); err != nil {
			t.Fatalf("go %s in relay's module (to fetch the modules the outside module loads): %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	write("go.sum", string(sum))
	write("main.go", string(main))

	goCmd := func(args ...string) (string, error) {
		cmd := exec.Command(goTool, args...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "GOFLAGS=-mod=mod", "GOPROXY=off", "GOSUMDB=off", "GOWORK=off", "GOTOOLCHAIN=local")
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	if out, err := goCmd("build", "-o", os.DevNull, "./..."); err != nil {
		t.Fatalf("a module outside relay's cannot build against the public packages: %v\n%s", err, out)
	}
	if out, err := goCmd("vet", "./..."); err != nil {
		t.Fatalf("go vet of the outside module: %v\n%s", err, out)
	}

	for pkg, banned := range public {
		out, err := goCmd("list", "-deps", "github.com/relayq/relay/"+pkg)
		if err != nil {
			t.Fatalf("go list -deps %s: %v\n%s", pkg, err, out)
		}
		for dep := range strings.FieldsSeq(out) {
			for _, b := range banned {
				if dep == "github.com/relayq/relay" || strings.HasPrefix(dep, b) {
					t.Errorf("package %s depends on %s", pkg, dep)
				}
			}
		}
	}

	// The control: the same module cannot use an internal package, so a public package
	// that did would fail the build above.
	write("control/control.go", "package control\n\nimport _ \"github.com/relayq/relay/internal/store\"\n")
	out, err := goCmd("build", "./control")
	if err == nil || !strings.Contains(out, "use of internal package") {
		t.Fatalf("importing relay's internal/store from outside the module: %v\n%s\nwant an error that says \"use of internal package\"", err, out)
	}
}

// sources are the Go files of the public packages, relative to root.
func sources(t *testing.T, root string) []string {
	t.Helper()
	var files []string
	for pkg := range public {
		entries, err := os.ReadDir(filepath.Join(root, pkg))
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			if strings.HasSuffix(e.Name(), ".go") {
				files = append(files, filepath.Join(pkg, e.Name()))
			}
		}
	}
	return files
}
