package store_test

import (
	"cmp"
	"context"
	"encoding/json"
	"testing"

	"github.com/relayq/relay/internal/store"
	"github.com/relayq/relay/relaytest"
)

// Go estimates a job's size in its hand-off as hand_off does from the row (migration
// 016), so that both of Store.Insert's statements hand off the same jobs: the JSON's
// length as jsonb writes it back, which jsonbTextLen works out from encoding/json's
// compact text. It is exact but where jsonb writes a value differently: longer for the
// characters encoding/json escapes for HTML, shorter for a number jsonb writes out in
// full (send_hand_off makes such a job pending again if its notification is too large).
func TestJSONBTextLenIsTheLengthOfJSONBsText(t *testing.T) {
	t.Parallel()
	db := relaytest.NewDB(t)
	for _, c := range []struct {
		value any
		cmp   int // of jsonbTextLen's length to jsonb's
	}{
		{map[string]any{}, 0},
		{[]int{}, 0},
		{map[string]any{"a": 1, "b": []any{1, "two", nil, true, 2.5}}, 0},
		{map[string]string{"k:ey,": `v:a,l "quoted" \ back:slash,`}, 0},
		{[]any{map[string]any{"x": []any{map[string]any{"y": "z,z"}}}, "\u00e9\u4e16", "tab\tnew\nline"}, 0},
		{map[string]string{"ctl": "\x01\x1f"}, 0},
		{map[string]string{"html": "<a href='x'>&</a>"}, +1}, // encoding/json writes \u003c, jsonb <
		{[]json.Number{"1e3"}, -1},                           // jsonb writes 1000
	} {
		b, err := json.Marshal(c.value)
		if err != nil {
			t.Fatal(err)
		}
		var want int
		if err := db.Pool.QueryRow(context.Background(), "SELECT octet_length($1::jsonb::text)", string(b)).Scan(&want); err != nil {
			t.Fatal(err)
		}
		if got := store.JSONBTextLen(string(b)); cmp.Compare(got, want) != c.cmp {
			t.Errorf("jsonbTextLen(%s) = %d; jsonb's text is %d bytes", b, got, want)
		}
	}
}
