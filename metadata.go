package relay

import (
	"encoding/json"
	"fmt"
	"maps"
	"unicode/utf8"
)

// Metadata adds entries to the job's metadata: a small set of strings stored with the job
// (a request id, a tenant, a trace context), given to its handler ([Job].Metadata) and
// middleware ([JobInfo].Metadata), and read back by [GetJob]. Given more than once, the
// entries add up, a later value replacing an earlier one of the same key; an
// [EnqueueMiddleware] may add more. A job without metadata stores none (NULL).
//
// The metadata is stored as a JSON object, checked like args: a key or value holding a
// NUL byte, or more than [MaxMetadataSize] bytes of JSON (default
// [DefaultMaxMetadataSize]), are refused with an error wrapping [ErrInvalidJob] (and
// [ErrTooLarge] for the size) before anything is sent.
func Metadata(entries map[string]string) EnqueueOption { return metadataOption(entries) }

type metadataOption map[string]string

func (m metadataOption) applyEnqueue(o *enqueueOptions) {
	// A copy: the options of EnqueueMany are applied to a copy of its base for each job,
	// and a job's own entries must not reach the others.
	merged := make(map[string]string, len(o.metadata)+len(m))
	maps.Copy(merged, o.metadata)
	maps.Copy(merged, m)
	o.metadata = merged
}

// MaxMetadataSize sets the most bytes the job's metadata may take as JSON; default
// [DefaultMaxMetadataSize]. It is checked after every [EnqueueMiddleware] has added its
// entries.
func MaxMetadataSize(n int) EnqueueOption { return maxMetadataSizeOption(n) }

type maxMetadataSizeOption int

func (n maxMetadataSizeOption) applyEnqueue(o *enqueueOptions) {
	v := int(n)
	o.maxMetadataSize = &v
}

// encodeMetadata encodes a job's metadata as the JSON object it is stored as: nil (NULL)
// for none. The error wraps ErrInvalidJob, and ErrTooLarge past limit.
func encodeMetadata(m map[string]string, limit int, whose func() string) ([]byte, error) {
	if len(m) == 0 {
		return nil, nil
	}
	encoded, err := json.Marshal(m)
	if err == nil {
		err = checkJSON(encoded)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: the metadata %s: %w", ErrInvalidJob, whose(), err)
	}
	if err := metadataLimit.check(len(encoded), limit, whose); err != nil {
		return nil, alsoMatching(err, ErrInvalidJob)
	}
	return encoded, nil
}

// decodeMetadata decodes stored metadata; nil for none. relay writes objects of strings,
// but other programs may enqueue jobs too: a value that is not a string is given as its
// JSON text, and anything but an object as no metadata.
func decodeMetadata(b []byte) map[string]string {
	if b == nil {
		return nil
	}
	if m, ok := decodeFlatStrings(b); ok {
		return m
	}
	var m map[string]string
	if json.Unmarshal(b, &m) == nil {
		return m
	}
	var raw map[string]json.RawMessage
	if json.Unmarshal(b, &raw) != nil {
		return nil
	}
	m = make(map[string]string, len(raw))
	for k, v := range raw {
		var s string
		if json.Unmarshal(v, &s) != nil {
			s = string(v)
		}
		m[k] = s
	}
	return m
}

// decodeFlatStrings decodes a JSON object of strings without escapes, as jsonb prints
// metadata such as a trace context: every claim of a job with metadata decodes it, and
// encoding/json takes five times as long. ok is false for anything else, which
// decodeMetadata leaves to encoding/json.
func decodeFlatStrings(b []byte) (m map[string]string, ok bool) {
	// The keys and values are slices of one copy of b: one allocation for all of them.
	text := string(b)
	i := 0
	ws := func() {
		for i < len(b) && (b[i] == ' ' || b[i] == '\n' || b[i] == '\t' || b[i] == '\r') {
			i++
		}
	}
	str := func() (string, bool) {
		if i >= len(b) || b[i] != '"' {
			return "", false
		}
		start := i + 1
		for i = start; i < len(b) && b[i] != '"'; i++ {
			if b[i] == '\\' || b[i] < 0x20 {
				return "", false
			}
		}
		if i >= len(b) {
			return "", false
		}
		i++
		if !utf8.ValidString(text[start : i-1]) {
			return "", false // encoding/json replaces such bytes
		}
		return text[start : i-1], true
	}
	ws()
	if i >= len(b) || b[i] != '{' {
		return nil, false
	}
	i++
	m = map[string]string{}
	for {
		ws()
		if i < len(b) && b[i] == '}' && len(m) == 0 {
			i++
			break
		}
		k, ok := str()
		if !ok {
			return nil, false
		}
		ws()
		if i >= len(b) || b[i] != ':' {
			return nil, false
		}
		i++
		ws()
		v, ok := str()
		if !ok {
			return nil, false
		}
		m[k] = v
		ws()
		if i < len(b) && b[i] == ',' {
			i++
			continue
		}
		if i < len(b) && b[i] == '}' {
			i++
			break
		}
		return nil, false
	}
	ws()
	return m, i == len(b)
}
