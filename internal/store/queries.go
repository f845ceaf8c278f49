package store

import (
	_ "embed"
	"fmt"
	"reflect"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
)

//go:embed queries.sql
var queriesSQL string

// queries holds the statements of queries.sql with the schema filled in.
type queries struct {
	insert, insertUnique, insertMany, insertManyUnique, uniqueHolder  string
	claim, lockQueue, claimGated, writeOutcomes                       string
	renewLeases, renewLocked, stopClient, rescue                      string
	cancel, retry, getJob, completeTx, checkpoint, setOutput, endedBy string
	setQueue, pauseQueue, getQueue, pendingQueues                     string
}

func buildQueries(quotedSchema string) queries {
	named := parseNamed(strings.ReplaceAll(queriesSQL, "{schema}", quotedSchema))
	section := func(name string) string {
		q, ok := named[name]
		if !ok {
			// queries.sql is embedded: a missing name is a bug caught by every test.
			panic(fmt.Sprintf("store: queries.sql has no query named %q", name))
		}
		return q
	}
	// Parts that several statements share are written once, as fragments, and appear in
	// them as {name}.
	var pairs []string
	for _, name := range []string{"claimed", "wakes", "blocksOnFailure"} {
		pairs = append(pairs, "{"+name+"}", section(name))
	}
	fill := strings.NewReplacer(pairs...)
	get := func(name string) string { return fill.Replace(section(name)) }
	q := queries{
		insert:           get("insert"),
		insertUnique:     get("insertUnique"),
		insertManyUnique: get("insertManyUnique"),
		uniqueHolder:     get("uniqueHolder"),
		lockQueue:        get("lockQueue"),
		claimGated:       get("claimGated"),
		setQueue:         get("setQueue"),
		pauseQueue:       get("pauseQueue"),
		getQueue:         get("getQueue"),
		pendingQueues:    get("pendingQueues"),
		insertMany:       get("insertMany"),
		claim:            get("claim"),
		writeOutcomes:    get("writeOutcomes"),
		renewLeases:      get("renewLeases"),
		renewLocked:      get("renewLocked"),
		stopClient:       get("stopClient"),
		rescue:           get("rescue"),
		cancel:           get("cancel"),
		retry:            get("retry"),
		// a record's columns are list.sql's, so GetJob and ListJobs read the same record
		getJob:     strings.ReplaceAll("SELECT "+fragment("columns")+" FROM {schema}.jobs WHERE id = $1", "{schema}", quotedSchema),
		completeTx: get("completeTx"),
		setOutput:  get("setOutput"),
		endedBy:    get("endedBy"),
		checkpoint: get("checkpoint"),
	}
	// A field left out above would be an empty statement, found only when first run.
	v := reflect.ValueOf(q)
	for i := range v.NumField() {
		if v.Field(i).String() == "" {
			panic(fmt.Sprintf("store: query %s is not built", v.Type().Field(i).Name))
		}
	}
	return q
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
