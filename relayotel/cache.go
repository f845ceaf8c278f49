package relayotel

import (
	"sync"
	"sync/atomic"
)

// cache holds values made once per key and looked up at every job. A lookup takes no
// lock and allocates nothing (a sync.Map boxes its key in an interface, which allocates
// at every lookup); adding a key — once per queue, kind and outcome — copies the map.
type cache[K comparable, V any] struct {
	mu sync.Mutex // held by writers
	m  atomic.Pointer[map[K]V]
}

// get returns the value of k, made by mk on first use.
func (c *cache[K, V]) get(k K, mk func() V) V {
	if m := c.m.Load(); m != nil {
		if v, ok := (*m)[k]; ok {
			return v
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	var old map[K]V
	if m := c.m.Load(); m != nil {
		if v, ok := (*m)[k]; ok {
			return v
		}
		old = *m
	}
	v := mk()
	next := make(map[K]V, len(old)+1)
	for key, val := range old {
		next[key] = val
	}
	next[k] = v
	c.m.Store(&next)
	return v
}

// each calls fn with every value.
func (c *cache[K, V]) each(fn func(V)) {
	if m := c.m.Load(); m != nil {
		for _, v := range *m {
			fn(v)
		}
	}
}
