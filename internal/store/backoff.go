package store

import (
	"encoding/json"
	"time"

	"github.com/relayq/relay/backoff"
)

// policyJSON is a job's own retry policy as the backoff column stores it: whole
// nanoseconds, so that a policy reads back exactly as it was given.
type policyJSON struct {
	InitialNS  int64   `json:"initial_ns"`
	Multiplier float64 `json:"multiplier"`
	MaxNS      int64   `json:"max_ns"`
	Jitter     float64 `json:"jitter"`
}

// encodePolicy is the backoff column's value for p: nil (NULL) for none.
func encodePolicy(p *backoff.Policy) []byte {
	if p == nil {
		return nil
	}
	// Four numbers, validated by the caller (finite): Marshal cannot fail.
	b, _ := json.Marshal(policyJSON{
		InitialNS: int64(p.Initial), Multiplier: p.Multiplier, MaxNS: int64(p.Max), Jitter: p.Jitter,
	})
	return b
}

// decodePolicy reads the backoff column. A value relay did not write, or one that is not a
// valid policy, reads as none: the job then retries by its kind's policy, as if it had none.
func decodePolicy(b []byte) *backoff.Policy {
	if b == nil {
		return nil
	}
	var j policyJSON
	if json.Unmarshal(b, &j) != nil {
		return nil
	}
	p := backoff.Policy{
		Initial: time.Duration(j.InitialNS), Multiplier: j.Multiplier, Max: time.Duration(j.MaxNS), Jitter: j.Jitter,
	}
	if p.Validate() != nil {
		return nil
	}
	return &p
}
