// Package relay runs background jobs out of PostgreSQL.
//
// Jobs are enqueued inside the caller's own transaction ([Enqueue], [EnqueueMany]), so a
// rolled-back transaction enqueues nothing and a committed one wakes a worker at once:
// every enqueue sends a NOTIFY in the same transaction, one LISTEN connection per
// [Client] fans wakeups out to per-queue dispatchers, and each dispatcher claims as many
// due jobs as it has free workers in one statement. Outcomes are written in batches.
// Polling is only a fallback for notifications lost while no connection was listening.
//
// A kind of job is declared once, with the Go type of its args ([NewKind]), and used by
// the handler and every producer, so that they agree at compile time: enqueueing args of
// another type does not compile.
//
//	type EmailArgs struct{ To, Subject string }
//
//	var SendEmail = relay.NewKind[EmailArgs]("email")
//
// A minimal worker:
//
//	c := relay.New(relay.Config{Logger: logger})
//	err := relay.Handle(c, SendEmail, func(ctx context.Context, job *relay.Job[EmailArgs]) error {
//		return send(ctx, job.Args)
//	})
//	if err != nil { ... }
//	if err := c.Start(ctx, pool); err != nil { ... }
//	defer c.Stop(shutdownCtx)
//
// and a producer, in its own transaction:
//
//	id, err := relay.Enqueue(ctx, tx, SendEmail, EmailArgs{To: "a@example.com"})
//
// Periodic jobs are registered like handlers ([Schedule], with [Cron] or [Every]), and
// finished jobs are deleted once their retention has passed ([Config].Retention); every
// client does both, with no leader, and the database keeps one job per slot.
//
// Delivery is at least once: a job runs again if its outcome could not be recorded (see
// the README's "Delivery semantics"). Everything relay stores lives in its own schema
// ("relay" by default), created and upgraded by [Migrate].
package relay
