package main

import (
	"io"
	"net"
	"sync"
)

// proxy forwards TCP connections to the database and can partition them: while
// partitioned, no byte passes either way and new connections are accepted but not
// forwarded, as when a network drops packets (no reset, no error: statements hang). The
// connections carry on, with what was sent meanwhile, once it heals.
type proxy struct {
	ln     net.Listener
	target string

	mu     sync.Mutex
	healed chan struct{} // nil unless partitioned; closed when the partition heals
	conns  map[net.Conn]bool
	closed bool
}

// newProxy listens on 127.0.0.1 and forwards every connection to target (host:port).
func newProxy(target string) (*proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &proxy{ln: ln, target: target, conns: map[net.Conn]bool{}}
	go p.accept()
	return p, nil
}

// addr is the host:port to connect to instead of the target.
func (p *proxy) addr() string { return p.ln.Addr().String() }

func (p *proxy) partition() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.healed == nil {
		p.healed = make(chan struct{})
	}
}

func (p *proxy) heal() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.healed != nil {
		close(p.healed)
		p.healed = nil
	}
}

// pass waits while the proxy is partitioned.
func (p *proxy) pass() {
	p.mu.Lock()
	healed := p.healed
	p.mu.Unlock()
	if healed != nil {
		<-healed
	}
}

// close stops listening and closes every connection.
func (p *proxy) close() {
	p.heal()
	p.ln.Close()
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	for c := range p.conns {
		c.Close()
	}
}

func (p *proxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		c.Close()
		return false
	}
	p.conns[c] = true
	return true
}

func (p *proxy) untrack(c net.Conn) {
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
	c.Close()
}

func (p *proxy) accept() {
	for {
		client, err := p.ln.Accept()
		if err != nil {
			return
		}
		go p.serve(client)
	}
}

func (p *proxy) serve(client net.Conn) {
	if !p.track(client) {
		return
	}
	defer p.untrack(client)
	p.pass() // a connection opened during a partition gets through once it heals
	server, err := net.Dial("tcp", p.target)
	if err != nil || !p.track(server) {
		return
	}
	defer p.untrack(server)
	done := make(chan struct{}, 2)
	go p.copy(server, client, done)
	go p.copy(client, server, done)
	<-done // one side closed: close both
}

// copy forwards from src to dst, holding each chunk while the proxy is partitioned.
func (p *proxy) copy(dst io.WriteCloser, src io.ReadCloser, done chan<- struct{}) {
	defer func() { done <- struct{}{} }()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			p.pass()
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}
