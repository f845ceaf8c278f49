// Package tool holds what relay's measuring programs (the benchmark, the chaos suite)
// share: their log and how they write their results.
package tool

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/lmittmann/tint"
)

// Logger logs to stderr at info level, or debug if verbose, in colour on a terminal only.
func Logger(verbose bool) *slog.Logger {
	level := slog.LevelInfo
	if verbose {
		level = slog.LevelDebug
	}
	st, _ := os.Stderr.Stat()
	return slog.New(tint.NewTextHandler(os.Stderr, &tint.Options{
		Level: level, TimeFormat: "15:04:05.000", NoColor: st == nil || st.Mode()&os.ModeCharDevice == 0,
	}))
}

// WriteJSON writes v to path as indented JSON, creating its directory.
func WriteJSON(path string, v any) error {
	if dir := filepath.Dir(path); dir != "" {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		return err
	}
	return os.WriteFile(path, buf.Bytes(), 0o644)
}
