package store

import (
	"context"
	"fmt"
	"maps"
	"reflect"
	"regexp"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Statements name their parameters (@kind, @queue) instead of numbering them, so that a
// reader matches every value to its placeholder by name, and each passes its values in a
// struct of its own whose fields carry the names (`db:"kind"`, as pgx's StructArgs reads
// them).
//
// The names are bound when the queries are built, not per call: pgx's own lexer (that of
// pgx.StrictNamedArgs, which knows string literals, quoted names and comments) turns them
// into $1, $2, … in order of first use, and a name the struct lacks, or a field the
// statement does not use, fails the build of the queries — which every test that touches
// the store does. Passing pgx.NamedArgs per call instead would lex the statement on every
// claim and outcome batch, and would bind a name it lacks as NULL without a word. The text
// sent stays positional, so it works in every query exec mode, planEachTime included.

// statement is a statement whose parameters are the fields of P.
type statement[P any] struct {
	sql string
	// each makes pgx plan the statement for its arguments every time: see planEachTime.
	each bool
	// around, if set, are the statements sent just before and just after this one, in the
	// same round trip, where the database takes batches: see planByIndex and planWithoutJIT
	// in queries.sql, and queryAround. A statement with each needs planWithoutJIT.
	around *[2]string
	// fields are the fields of P behind $1, $2, …, as reflect index paths.
	fields [][]int
}

// positional matches a numbered parameter: statements name theirs.
var positional = regexp.MustCompile(`\$[0-9]+`)

// prepare numbers the named parameters of sql and binds each to the field of P that
// carries its name. Unless partial, every field of P must be used.
func prepare[P any](sql string, partial bool) (statement[P], error) {
	if loc := positional.FindStringIndex(sql); loc != nil {
		return statement[P]{}, fmt.Errorf("numbered parameter %s: name it", sql[loc[0]:loc[1]])
	}
	fields := paramFields(reflect.TypeFor[P]())
	names := make(pgx.NamedArgs, len(fields))
	for name := range fields {
		names[name] = name // so that the rewritten arguments say which name each one is
	}
	var rewriter pgx.QueryRewriter = pgx.StrictNamedArgs(names)
	if partial {
		rewriter = names
	}
	numbered, order, err := rewriter.RewriteQuery(context.Background(), nil, sql, nil)
	if err != nil {
		return statement[P]{}, fmt.Errorf("parameters of %s: %w", reflect.TypeFor[P](), err)
	}
	st := statement[P]{sql: numbered, fields: make([][]int, len(order))}
	for i, name := range order {
		if name == nil { // only NamedArgs, the partial rewriter, leaves a name it lacks unbound
			return statement[P]{}, fmt.Errorf("parameter $%d of the statement is not among the fields of %s: %v",
				i+1, reflect.TypeFor[P](), slices.Sorted(maps.Keys(fields)))
		}
		st.fields[i] = fields[name.(string)]
	}
	return st, nil
}

// binder is a statement of any parameters, to be bound.
type binder interface {
	bind(sql string, schema *strings.Replacer) error
}

// bind makes st the statement sql, its parameters numbered, then its {schema} filled in.
func (st *statement[P]) bind(sql string, schema *strings.Replacer) error {
	prepared, err := prepare[P](sql, false)
	if err != nil {
		return err
	}
	prepared.sql = schema.Replace(prepared.sql)
	*st = prepared
	return nil
}

// paramFields maps the parameter names of struct type t — the db tags of its fields,
// those promoted from embedded structs included — to the fields.
func paramFields(t reflect.Type) map[string][]int {
	fields := map[string][]int{}
	for _, f := range reflect.VisibleFields(t) {
		if name, ok := f.Tag.Lookup("db"); ok {
			fields[name] = f.Index
		}
	}
	return fields
}

// args are the arguments of the statement for parameters p, in the statement's order.
func (st statement[P]) args(p P) []any {
	v := reflect.ValueOf(&p).Elem()
	args := make([]any, 0, len(st.fields)+1)
	if st.each {
		args = append(args, planEachTime)
	}
	for _, f := range st.fields {
		args = append(args, v.FieldByIndex(f).Interface())
	}
	return args
}

func (st *statement[P]) setAround(around *[2]string) { st.around = around }

func (st *statement[P]) text() string { return st.sql }

func (st statement[P]) query(ctx context.Context, db DB, p P) (pgx.Rows, error) {
	if st.around != nil {
		return queryAround(ctx, db, st.around, st.sql, st.args(p))
	}
	return db.Query(ctx, st.sql, st.args(p)...)
}

func (st statement[P]) queryRow(ctx context.Context, db DB, p P) pgx.Row {
	if st.around != nil {
		rows, err := st.query(ctx, db, p)
		return firstRow{rows, err}
	}
	return db.QueryRow(ctx, st.sql, st.args(p)...)
}

func (st statement[P]) exec(ctx context.Context, db DB, p P) (pgconn.CommandTag, error) {
	if st.around != nil {
		rows, err := st.query(ctx, db, p)
		if err != nil {
			return pgconn.CommandTag{}, err
		}
		rows.Close()
		return rows.CommandTag(), rows.Err()
	}
	return db.Exec(ctx, st.sql, st.args(p)...)
}

// queue adds the statement to a batch, which runs in the connection's exec mode: a batch
// takes no planEachTime.
func (st statement[P]) queue(b *pgx.Batch, p P) { b.Queue(st.sql, st.args(p)...) }
