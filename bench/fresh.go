package main

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/relayq/relay/dispatcher"
	"github.com/relayq/relay/internal/store"
)

const (
	freshBacklog = 10_000 // jobs in the table, analyzed, so that plans are made on a real one
	freshConns   = 30     // fresh connections, each claiming freshClaims times
	freshClaims  = 7      // PostgreSQL plans a prepared statement for its values 5 times first
	freshQueue   = "fresh-empty"
)

// runFresh: what a claim costs on a connection that has just been opened, as every
// connection is after an outage or a storm of killed connections, when all of a client's
// connections are new at once. It opens freshConns connections one after the other, and on
// each makes freshClaims claims of an empty queue (a plan and a probe of the claim index,
// which is what a fresh connection pays extra) behind an analyzed backlog of another queue,
// and reports the connect, each claim's time (median over the connections), and the first
// six claims against six claims on a warm connection, measured in the same run.
func runFresh(ctx context.Context, b *bench) (*RunResult, error) {
	if _, err := enqueueNoOps(ctx, b, freshBacklog, b.enqueueOpts(benchQueue)); err != nil {
		return nil, err
	}
	if _, err := b.db.admin.Exec(ctx, "ANALYZE "+b.db.jobsTable()); err != nil {
		return nil, err
	}
	s, err := store.For(b.db.schema)
	if err != nil {
		return nil, err
	}
	info := store.ClientInfo{ID: "bench-fresh", Lease: time.Minute, Queues: []string{freshQueue},
		Kinds: []string{benchKind.Name()}, Attempts: []int32{25}}
	claim := dispatcher.ClaimRequest{Queue: freshQueue, Limit: 100}
	url := b.db.url // direct, even with -via-pgbouncer: a fresh connection is a new server process

	connects := make([]float64, 0, freshConns)
	claims := make([][]float64, freshClaims) // claims[k]: the k+1-th claim on each connection, ms
	var warm []float64                       // claims past the freshClaims-th on the last connection
	for i := range freshConns {
		began := time.Now()
		conn, err := pgx.Connect(ctx, url)
		if err != nil {
			return nil, err
		}
		connects = append(connects, msSince(began))
		c := s.Client(conn, info)
		n := freshClaims
		if i == freshConns-1 {
			n += freshClaims * 3 // the warm reference: the same connection, long after its first claims
		}
		for k := range n {
			began := time.Now()
			if _, err := c.Claim(ctx, claim); err != nil {
				conn.Close(context.WithoutCancel(ctx))
				return nil, err
			}
			if d := msSince(began); k < freshClaims {
				claims[k] = append(claims[k], d)
			} else if k >= 2*freshClaims {
				warm = append(warm, d)
			}
		}
		if err := conn.Close(ctx); err != nil {
			return nil, err
		}
	}

	res := &RunResult{}
	res.Metrics = append(res.Metrics, Metric{Name: "connect (pgx.Connect)", Unit: unitMs, Value: median(connects)})
	firstSix := 0.0
	for k, ds := range claims {
		m := median(ds)
		if k < 6 {
			firstSix += m
		}
		res.Metrics = append(res.Metrics, Metric{Name: fmt.Sprintf("claim %d on a fresh connection", k+1), Unit: unitMs, Value: m})
	}
	warmClaim := median(warm)
	res.Metrics = append(res.Metrics,
		Metric{Name: "claim on a warm connection", Unit: unitMs, Value: warmClaim},
		Metric{Name: "claims 1–6 on a fresh connection", Unit: unitMs, Value: firstSix},
		Metric{Name: "claims 1–6 fresh / 6 warm claims", Unit: unitRatio, Value: firstSix / (6 * warmClaim)},
		Metric{Name: "claims 2–6 fresh / 5 warm claims", Unit: unitRatio, Value: (firstSix - median(claims[0])) / (5 * warmClaim)},
	)
	res.Notes = append(res.Notes, fmt.Sprintf("%d fresh connections, each claiming %d times from an empty queue behind %d analyzed jobs; medians over the connections",
		freshConns, freshClaims, freshBacklog))
	return res, nil
}

func msSince(t time.Time) float64 { return float64(time.Since(t)) / float64(time.Millisecond) }
