package store

import (
	_ "embed"
	"fmt"
	"maps"
	"reflect"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
)

//go:embed queries.sql
var queriesSQL string

// queries holds the statements of queries.sql with the schema filled in, each with the
// struct of its parameters (see params.go).
type queries struct {
	insert             statement[insertParams]
	insertHandedOff    statement[insertHandedOffParams]
	insertHeld         statement[insertHeldParams]
	insertUnique       statement[insertUniqueParams]
	insertJobs         statement[insertJobsParams]
	planByIndex        statement[struct{}]
	restorePlan        statement[struct{}]
	planWithoutJIT     statement[struct{}]
	restoreJIT         statement[struct{}]
	claim              statement[claimFromParams]
	lockQueue          statement[lockParams]
	claimGated         statement[claimGatedParams]
	genericPlan        statement[struct{}]
	writeOutcomes      statement[outcomeParams]
	renewLeases        statement[renewParams]
	renewLocked        statement[renewLockedParams]
	stopClient         statement[clientParams]
	rescue             statement[rescueParams]
	ackHandOffs        statement[ackParams]
	holdListening      statement[clientParams]
	releaseHandOff     statement[heldParams]
	refuseHandOffs     statement[clientParams]
	handedOff          statement[handedOffParams]
	giveBackHandOffs   statement[giveBackParams]
	cancel             statement[jobParams]
	retry              statement[jobParams]
	commitJobs         statement[idsParams]
	extendReservations statement[extendParams]
	expire             statement[expireParams]
	getJob             statement[idParams]
	completeTx         statement[completeTxParams]
	checkpoint         statement[checkpointParams]
	setOutput          statement[setOutputParams]
	endedBy            statement[heldParams]
	setQueue           statement[setQueueParams]
	pauseQueue         statement[pauseQueueParams]
	getQueue           statement[queueParams]
	pendingQueues      statement[patternsParams]
	unhandled          statement[unhandledParams]

	forgetDispatchers statement[queueClientParams]
	dispatcherWaits   statement[queueClientParams]
	dispatchersPoll   statement[queuesClientParams]
	probe             statement[probeParams]
	writers           statement[writersParams]
	stillRunning      statement[vxidsParams]
	holdWaitLocks     statement[waitLocksParams]
	releaseWaitLocks  statement[waitLocksParams]
	takeClientLock    statement[clientParams]
}

func buildQueries(names *strings.Replacer) queries {
	var q queries
	bindAll(queriesSQL, "queries.sql", names, []named{
		{"insert", &q.insert}, {"insertHandedOff", &q.insertHandedOff}, {"insertHeld", &q.insertHeld}, {"insertUnique", &q.insertUnique}, {"insertJobs", &q.insertJobs},
		{"planByIndex", &q.planByIndex}, {"restorePlan", &q.restorePlan},
		{"planWithoutJIT", &q.planWithoutJIT}, {"restoreJIT", &q.restoreJIT},
		{"claim", &q.claim}, {"lockQueue", &q.lockQueue}, {"claimGated", &q.claimGated},
		{"genericPlan", &q.genericPlan}, {"writeOutcomes", &q.writeOutcomes}, {"renewLeases", &q.renewLeases}, {"renewLocked", &q.renewLocked},
		{"stopClient", &q.stopClient}, {"rescue", &q.rescue}, {"ackHandOffs", &q.ackHandOffs}, {"holdListening", &q.holdListening}, {"releaseHandOff", &q.releaseHandOff}, {"handedOff", &q.handedOff},
		{"giveBackHandOffs", &q.giveBackHandOffs},
		{"refuseHandOffs", &q.refuseHandOffs}, {"cancel", &q.cancel}, {"retry", &q.retry},
		{"completeTx", &q.completeTx}, {"checkpoint", &q.checkpoint}, {"setOutput", &q.setOutput},
		{"endedBy", &q.endedBy}, {"setQueue", &q.setQueue}, {"pauseQueue", &q.pauseQueue},
		{"getQueue", &q.getQueue}, {"pendingQueues", &q.pendingQueues}, {"unhandled", &q.unhandled},
		{"forgetDispatchers", &q.forgetDispatchers}, {"dispatcherWaits", &q.dispatcherWaits},
		{"dispatchersPoll", &q.dispatchersPoll}, {"probe", &q.probe},
		{"writers", &q.writers}, {"stillRunning", &q.stillRunning},
		{"holdWaitLocks", &q.holdWaitLocks}, {"releaseWaitLocks", &q.releaseWaitLocks}, {"takeClientLock", &q.takeClientLock},
		{"commitJobs", &q.commitJobs}, {"extendReservations", &q.extendReservations}, {"expire", &q.expire},
	})
	// a record's columns are list.sql's, so GetJob and ListJobs read the same record
	bindOne("getJob", "SELECT "+fragment("columns")+" FROM {schema}.jobs WHERE id = @id", names, &q.getJob)
	// The rescue's best plan depends on how many jobs are running.
	q.rescue.each = true
	checkBuilt(q)
	return q
}

// named is a statement to bind to the section of a .sql file that has its name.
type named struct {
	name string
	st   binder
}

// fragmentNames are the sections that other statements include as {name}: parts that
// several statements share, written once. They may come from any of the .sql files that
// bindAll reads.
var fragmentNames = []string{
	"claimed", "wakes", "blocksOnFailure", "pendingQueueScan", "cancelTarget", "retryTarget", // queries.sql
	"newJob", "announceHeld", "reservations", // queries.sql: enqueues and reservations
	"wakeJob", "wokenKinds", // queries.sql: wait locks and addressed wakeups
	"deleteTarget", "bulkLocked", // delete.sql
	"queuesInState",             // list.sql
	"pruneRules", "pruneCutoff", // retention.sql
	"windowStart", // dashboard.sql
}

// fragments fills in the shared fragments, from whichever file holds each.
var fragments = func() *strings.Replacer {
	all := map[string]string{}
	for _, file := range []string{queriesSQL, deleteSQL, listSQL, retentionSQL, dashboardSQL} {
		maps.Copy(all, parseNamed(file))
	}
	var pairs []string
	for _, name := range fragmentNames {
		f, ok := all[name]
		if !ok {
			panic(fmt.Sprintf("store: no .sql file has the fragment %q", name))
		}
		pairs = append(pairs, "{"+name+"}", f)
	}
	return strings.NewReplacer(pairs...)
}()

// schemaReplacer fills in {schema}, the quoted name of schema, and {channel}, its wakeup
// channel as a string literal. It goes in last, once the parameters are numbered: whatever
// the schema's name holds stays a quoted name, or a string.
func schemaReplacer(schema string) *strings.Replacer {
	return strings.NewReplacer("{schema}", pgx.Identifier{schema}.Sanitize(), "{channel}", quoteString(channelOf(schema)))
}

// quoteString is s as an SQL string literal. An escape string (E'…'), whose backslashes are
// escapes whatever standard_conforming_strings says, so that doubling them is right
// everywhere.
func quoteString(s string) string {
	return "E'" + strings.NewReplacer(`\`, `\\`, `'`, `''`).Replace(s) + "'"
}

// bindAll binds each statement of targets to the section of file (called fileName in
// errors) that has its name, with the shared fragments filled in. A missing section or a
// mismatch of parameters panics: the files are embedded, so it is a bug caught by every
// test that touches the store.
func bindAll(file, fileName string, schema *strings.Replacer, targets []named) {
	sections := parseNamed(file)
	for _, t := range targets {
		sql, ok := sections[t.name]
		if !ok {
			panic(fmt.Sprintf("store: %s has no statement named %q", fileName, t.name))
		}
		bindOne(t.name, fragments.Replace(sql), schema, t.st)
	}
}

// bindOne binds st to sql: its parameters to the fields of st's struct.
func bindOne(name, sql string, schema *strings.Replacer, st binder) {
	if err := st.bind(sql, schema); err != nil {
		panic(fmt.Sprintf("store: query %s: %v", name, err))
	}
}

// checkBuilt panics if q, a struct of statements, has one left out of its binding: it
// would be an empty statement, found only when first run.
func checkBuilt(q any) {
	v := reflect.ValueOf(q)
	for i := range v.NumField() {
		if v.Field(i).FieldByName("sql").String() == "" {
			panic(fmt.Sprintf("store: query %s is not built", v.Type().Field(i).Name))
		}
	}
}

// parseNamed splits a file of "-- name: x" sections into statements by name. Comment lines
// are dropped so that the text sent to the server is only the statement.
func parseNamed(file string) map[string]string {
	named := map[string]string{}
	var name string
	var body strings.Builder
	flush := func() {
		if name != "" {
			named[name] = strings.TrimSuffix(strings.TrimSpace(body.String()), ";")
		}
		body.Reset()
	}
	for line := range strings.Lines(file) {
		trimmed := strings.TrimSpace(line)
		if n, ok := strings.CutPrefix(trimmed, "-- name:"); ok {
			flush()
			name = strings.TrimSpace(n)
			continue
		}
		if strings.HasPrefix(trimmed, "--") {
			continue
		}
		body.WriteString(line)
	}
	flush()
	return named
}

// planEachTime, passed before a statement's arguments, makes pgx run it as an unnamed
// statement, which PostgreSQL plans for the arguments at hand every time: for the rare
// statements (rescue, listing) whose best plan depends on their arguments or on how the
// table has grown. The hot batch statements (writeOutcomes, renewLeases) are written so
// that every plan reaches the jobs by primary key, and stay prepared: planning one took
// ~0.3 ms, as much as writing a hundred outcomes.
const planEachTime = pgx.QueryExecModeExec

// nullText passes s, or NULL if it is empty.
func nullText(s string) pgtype.Text { return pgtype.Text{String: s, Valid: s != ""} }

// jsonParam passes JSON (NULL if nil) as text. As []byte it would be sent as bytea, and
// read as '\x…' by a pool that does not prepare statements (QueryExecModeExec, the simple
// protocol), where the server learns a parameter's type only from the statement.
func jsonParam(b []byte) pgtype.Text { return pgtype.Text{String: string(b), Valid: b != nil} }
