// Package testlog gives tests a [slog.Handler] that hands every record to a function, to
// watch what relay logs.
package testlog

import (
	"context"
	"log/slog"
)

// Func is a [slog.Handler] that calls itself with every record, of every level.
type Func func(slog.Record)

func (f Func) Enabled(context.Context, slog.Level) bool      { return true }
func (f Func) Handle(_ context.Context, r slog.Record) error { f(r); return nil }
func (f Func) WithAttrs([]slog.Attr) slog.Handler            { return f }
func (f Func) WithGroup(string) slog.Handler                 { return f }

// Attr returns the value of r's attribute key, and whether r has one.
func Attr(r slog.Record, key string) (v slog.Value, ok bool) {
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == key {
			v, ok = a.Value, true
		}
		return !ok
	})
	return v, ok
}
