package store_test

import (
	"testing"

	"github.com/relayq/relay/internal/store"
	"github.com/relayq/relay/relaytest"
)

// newStoreTest is what most tests of the store start from: a migrated schema of their own,
// and the Store of it.
func newStoreTest(t *testing.T) (*relaytest.DB, *store.Store) {
	t.Helper()
	db := relaytest.NewDB(t)
	return db, storeOf(t, db)
}

// storeOf is the Store of db's schema.
func storeOf(t *testing.T, db *relaytest.DB) *store.Store {
	t.Helper()
	s, err := store.For(db.Schema)
	if err != nil {
		t.Fatal(err)
	}
	return s
}
