// Package migrations holds relay's numbered schema migrations, embedded in the binary.
//
// Each file is named NNN_description.sql and is written with unqualified names: the
// migrator runs it with search_path set to the target schema, so one set of files serves
// every schema name. Files are applied in version order, each at most once.
package migrations

import (
	"embed"
	"fmt"
	"io/fs"
	"sort"
	"strconv"
	"strings"
)

//go:embed *.sql
var files embed.FS

// Migration is one numbered schema change.
type Migration struct {
	Version int    // the NNN prefix of the file name
	Name    string // the file name without its extension
	SQL     string // the statements, with unqualified names
}

// All returns every migration in ascending version order.
func All() ([]Migration, error) {
	entries, err := fs.ReadDir(files, ".")
	if err != nil {
		return nil, fmt.Errorf("migrations: read embedded files: %w", err)
	}
	var all []Migration
	for _, e := range entries {
		name, ok := strings.CutSuffix(e.Name(), ".sql")
		if !ok {
			continue
		}
		prefix, _, _ := strings.Cut(name, "_")
		version, err := strconv.Atoi(prefix)
		if err != nil || version <= 0 {
			return nil, fmt.Errorf("migrations: file %q does not start with a positive version number", e.Name())
		}
		body, err := fs.ReadFile(files, e.Name())
		if err != nil {
			return nil, fmt.Errorf("migrations: read %s: %w", e.Name(), err)
		}
		all = append(all, Migration{Version: version, Name: name, SQL: string(body)})
	}
	sort.Slice(all, func(i, j int) bool { return all[i].Version < all[j].Version })
	for i := 1; i < len(all); i++ {
		if all[i].Version == all[i-1].Version {
			return nil, fmt.Errorf("migrations: version %d is used twice (%s, %s)", all[i].Version, all[i-1].Name, all[i].Name)
		}
	}
	return all, nil
}
