package store

import (
	"reflect"
	"strings"
	"testing"
)

type testParams struct {
	Queue string `db:"queue"`
	Limit int    `db:"limit"`
}

type testMoreParams struct {
	testParams
	Kinds []string `db:"kinds"`
}

// Names become $1, $2, … in order of first use, a name used twice keeps its number, and
// what only looks like a name (in a literal, a quoted name, a comment) is left alone. The
// arguments follow the numbers, fields of embedded structs included.
func TestPrepareNumbersNamedParameters(t *testing.T) {
	st, err := prepare[testMoreParams](`SELECT '@queue', "@limit", @limit::integer
FROM t WHERE queue = @queue -- @kinds
  AND kind = ANY(@kinds::text[]) AND queue <> @queue /* @limit */`, false)
	if err != nil {
		t.Fatal(err)
	}
	want := `SELECT '@queue', "@limit", $1::integer
FROM t WHERE queue = $2 -- @kinds
  AND kind = ANY($3::text[]) AND queue <> $2 /* @limit */`
	if st.sql != want {
		t.Errorf("numbered:\n%s\nwant:\n%s", st.sql, want)
	}
	args := st.args(testMoreParams{testParams: testParams{Queue: "q", Limit: 7}, Kinds: []string{"k"}})
	if wantArgs := []any{7, "q", []string{"k"}}; !reflect.DeepEqual(args, wantArgs) {
		t.Errorf("args = %#v, want %#v", args, wantArgs)
	}
	st.each = true
	if args := st.args(testMoreParams{}); len(args) != 4 || args[0] != planEachTime {
		t.Errorf("args of a statement planned each time = %#v, want planEachTime first", args)
	}
}

// A name the struct lacks, a field the statement does not use, and a numbered parameter
// are refused: a statement never binds a parameter to nothing, as pgx.NamedArgs would.
func TestPrepareRefusesMismatches(t *testing.T) {
	for _, tc := range []struct {
		name, sql string
		partial   bool
		want      string
	}{
		{"a name the struct lacks", "SELECT @queue, @limit, @kind", false, "kind"},
		{"a name the struct lacks, partial", "SELECT @queue, @kind", true, "$2"},
		{"a field not used", "SELECT @queue", false, "limit"},
		{"a numbered parameter", "SELECT @queue, @limit, $3", false, "$3"},
		{"a numbered parameter, partial", "SELECT $1", true, "$1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := prepare[testParams](tc.sql, tc.partial)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("prepare(%q) = %v, want an error that names %s", tc.sql, err, tc.want)
			}
		})
	}
	if _, err := prepare[testParams]("SELECT @queue", true); err != nil {
		t.Errorf("a partial statement that leaves a field unused: %v", err)
	}
}

// Every statement of queries.sql and list.sql is bound to its parameters: building them
// for a schema whose name looks like parameters, and holds a quote and a backslash, leaves
// that name alone, as a quoted name and in the channel's string.
func TestQueriesBindEveryParameter(t *testing.T) {
	q := buildQueries(schemaReplacer(`s@queue$1'\`))
	if !strings.Contains(q.claim.sql, `"s@queue$1'\".jobs`) {
		t.Errorf("the schema name changed in claim:\n%s", q.claim.sql)
	}
	if !strings.Contains(q.insert.sql, `E'relay:s@queue$1''\\'`) {
		t.Errorf("the channel is not the schema's, as a string, in insert:\n%s", q.insert.sql)
	}
	if n := len(q.claim.fields); n != 10 {
		t.Errorf("claim binds %d parameters, want 10", n)
	}
	for _, f := range []ListFilter{
		{Limit: 10},
		{Queue: "q", Kind: "k", States: []string{StatePending, StateScheduled, StateRunning, StateSucceeded}, Limit: 10},
		{Kind: "k", States: []string{StateFailed}, Limit: 10},
	} {
		sql, args := buildList(schemaReplacer("s"), f)
		if strings.Contains(sql, "@") {
			t.Errorf("listing %+v left a named parameter:\n%s", f, sql)
		}
		if args[0] != planEachTime {
			t.Errorf("listing %+v is not planned for its arguments: %#v", f, args)
		}
	}
}
