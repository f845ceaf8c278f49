package relay

import (
	"encoding/json"
	"maps"
	"testing"
)

// FuzzDecodeMetadata: the fast path of decodeMetadata agrees with encoding/json on every
// input it takes, and decodeMetadata gives every object of strings as encoding/json does.
func FuzzDecodeMetadata(f *testing.F) {
	for _, s := range []string{
		`{}`, ` { } `, `{"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}`,
		`{"a": "1", "b": "2"}`, `{"a":"x\"y"}`, `{"a": 1}`, `{"a": {"b": "c"}}`, `{"a": "1",}`, `{"a" "1"}`,
		`[]`, `"s"`, `{"a": "1"} x`, `{"é": "\u00e9"}`, `{"a": "1", "a": "2"}`, `{"a":"b\n"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var want map[string]string
		wantErr := json.Unmarshal(b, &want)
		if got, ok := decodeFlatStrings(b); ok && (wantErr != nil || !maps.Equal(got, want)) {
			t.Fatalf("decodeFlatStrings(%q) = %v; encoding/json: %v, %v", b, got, want, wantErr)
		}
		if got := decodeMetadata(b); wantErr == nil && want != nil && !maps.Equal(got, want) {
			t.Fatalf("decodeMetadata(%q) = %v; want %v", b, got, want)
		}
	})
}

// BenchmarkDecodeMetadata: what each claim of a job enqueued with a trace context pays to
// decode it.
func BenchmarkDecodeMetadata(b *testing.B) {
	stored := []byte(`{"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}`)
	b.ReportAllocs()
	for b.Loop() {
		if decodeMetadata(stored) == nil {
			b.Fatal("no metadata")
		}
	}
}
