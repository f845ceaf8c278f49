package store

import "log/slog"

// JobLogArgs are the arguments of a line relay logs about attempt attempt of job id: a
// group "job" with its id, kind, queue and attempt, so that logs can be joined with traces
// and metrics, then what middleware added to the attempt's lines (a trace id), then more.
func JobLogArgs(id int64, kind, queue string, attempt int, added []slog.Attr, more ...any) []any {
	args := make([]any, 0, 1+len(added)+len(more))
	args = append(args, slog.Group("job",
		slog.Int64("id", id), slog.String("kind", kind), slog.String("queue", queue), slog.Int("attempt", attempt)))
	for _, a := range added {
		args = append(args, a)
	}
	return append(args, more...)
}

// LogArgs are JobLogArgs for the attempt whose outcome is o.
func (o Outcome) LogArgs(more ...any) []any {
	return JobLogArgs(o.ID, o.Kind, o.Queue, o.Attempt, o.LogAttrs, more...)
}
