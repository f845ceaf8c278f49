package store

import (
	"time"

	"github.com/relayq/relay/dispatcher"
	"github.com/relayq/relay/lease"
)

// Statements and arguments of the batch statements, for tests that look at their plans.

func (s *Store) WriteOutcomesStatement(client string, outcomes []Outcome) (string, []any) {
	return s.q.writeOutcomes.sql, s.q.writeOutcomes.args(s.outcomeParams(client, outcomes))
}

func (s *Store) RenewLeasesStatement(client ClientInfo, held []lease.Held, ttl time.Duration) (string, []any) {
	return s.q.renewLeases.sql, s.q.renewLeases.args(renewParamsOf(client, held, ttl))
}

func (s *Store) AckHandOffsStatement(client string, held []lease.Held, ttl time.Duration) (string, []any) {
	p := ackParams{Client: client, TTL: ttl, IDs: make([]int64, len(held)), Attempts: make([]int32, len(held))}
	for i, h := range held {
		p.IDs[i], p.Attempts[i] = h.ID, int32(h.Attempt)
	}
	return s.q.ackHandOffs.sql, s.q.ackHandOffs.args(p)
}

// ByIndexStatements are the statements sent between planByIndex and restorePlan.
func (s *Store) ByIndexStatements() []string {
	var sqls []string
	for _, st := range s.byIndex() {
		sqls = append(sqls, st.text())
	}
	return sqls
}

// GenericPlanStatement is the statement a plain claim, a renewal, an outcome batch and an
// acknowledgement of hand-offs are sent after.
func (s *Store) GenericPlanStatement() string { return s.q.genericPlan.sql }

// ClaimStatement is the statement of a claim of r (a gated one without its lock, and
// without a pass for strays).
func (c *Client) ClaimStatement(r dispatcher.ClaimRequest) (string, []any) {
	return c.claimStatement(r, false)
}

// StraysClaimStatement is the statement of a gated claim of r that looks for strays.
func (c *Client) StraysClaimStatement(r dispatcher.ClaimRequest) (string, []any) {
	r.Gated = true
	return c.claimStatement(r, true)
}

func (c *Client) claimStatement(r dispatcher.ClaimRequest, strays bool) (string, []any) {
	if r.Gated {
		return c.s.q.claimGated.sql, c.s.q.claimGated.args(claimGatedParams{claimParams: c.claimParams(r), Strays: strays})
	}
	return c.s.q.claim.sql, c.s.q.claim.args(c.claimFromParams(r))
}

// WindowStartStatement selects the dashboard's {windowStart} for a look-back of $1 seconds.
func (s *Store) WindowStartStatement() string {
	var st statement[struct {
		LookBack float64 `db:"look_back"`
	}]
	bindOne("windowStart", fragments.Replace("SELECT {windowStart}"), s.names, &st)
	return st.sql
}

// JSONBTextLen is jsonbTextLen, for the test that checks it against PostgreSQL.
var JSONBTextLen = jsonbTextLen
