// Package outside holds the test that relay's public subpackages (dispatcher, lease,
// listener, backoff) can be used from a module other than relay's own: none of their
// exported identifiers may need a type from internal/.
package outside
