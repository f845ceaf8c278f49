package store

import (
	"time"

	"github.com/relayq/relay/lease"
)

// Statements and arguments of the batch statements, for tests that look at their plans.

func (s *Store) WriteOutcomesStatement(client string, outcomes []Outcome) (string, []any) {
	return s.q.writeOutcomes.sql, s.q.writeOutcomes.args(s.outcomeParams(client, outcomes))
}

func (s *Store) RenewLeasesStatement(client ClientInfo, held []lease.Held, ttl time.Duration) (string, []any) {
	return s.q.renewLeases.sql, s.q.renewLeases.args(renewParamsOf(client, held, ttl))
}
