package store

// Statements and arguments of the batch statements, for tests that look at their plans.

func (s *Store) WriteOutcomesStatement(client string, outcomes []Outcome) (string, []any) {
	return s.q.writeOutcomes, s.outcomeArgs(client, outcomes, false)
}

func (s *Store) RenewLeasesStatement(client ClientInfo, held []Held) (string, []any) {
	return s.q.renewLeases, renewArgs(client, held)
}
