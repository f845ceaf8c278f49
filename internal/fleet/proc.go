package fleet

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Proc is a running worker process, as its parent sees it.
type Proc struct {
	Spec    Spec
	cmd     *exec.Cmd
	stdin   io.WriteCloser
	ready   chan struct{} // closed when it said "ready"
	exited  chan struct{} // closed once it has exited and been waited for
	mu      sync.Mutex
	stopped bool // asked to stop or killed: its exit is expected
}

// Start starts a worker process running spec: this program's binary again, which must
// call [Main] first. Its stderr (relay's log) goes to stderr. It is killed if its parent
// dies, since it exits when its stdin closes.
func Start(spec Spec, stderr io.Writer) (*Proc, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	raw, err := json.Marshal(spec)
	if err != nil {
		return nil, err
	}
	p := &Proc{Spec: spec, ready: make(chan struct{}), exited: make(chan struct{})}
	p.cmd = exec.Command(exe)
	p.cmd.Env = append(os.Environ(), envSpec+"="+string(raw))
	p.cmd.Stderr = stderr
	if p.stdin, err = p.cmd.StdinPipe(); err != nil {
		return nil, err
	}
	stdout, err := p.cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start worker %s: %w", spec.ID, err)
	}
	go func() {
		defer close(p.exited)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if strings.TrimSpace(sc.Text()) == "ready" {
				close(p.ready)
			}
		}
		_ = p.cmd.Wait() // only once stdout is drained: Wait closes it
	}()
	return p, nil
}

// Pid is the worker's process id.
func (p *Proc) Pid() int { return p.cmd.Process.Pid }

// WaitReady waits until the worker's client has started.
func (p *Proc) WaitReady(ctx context.Context) error {
	select {
	case <-p.ready:
		return nil
	case <-p.exited:
		return fmt.Errorf("worker %s exited before it was ready: %v", p.Spec.ID, p.cmd.ProcessState)
	case <-ctx.Done():
		return fmt.Errorf("worker %s: waiting for it to be ready: %w", p.Spec.ID, ctx.Err())
	}
}

// Exited is closed once the worker has exited.
func (p *Proc) Exited() <-chan struct{} { return p.exited }

// Unexpected reports whether the worker exited without being told to.
func (p *Proc) Unexpected() bool {
	select {
	case <-p.exited:
	default:
		return false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return !p.stopped
}

// Stop asks the worker to stop its client gracefully (relay's Stop waits for its running
// handlers) and waits until it has exited, or kills it once timeout has passed.
func (p *Proc) Stop(timeout time.Duration) error {
	p.mu.Lock()
	p.stopped = true
	p.mu.Unlock()
	if _, err := io.WriteString(p.stdin, "stop\n"); err != nil && !errors.Is(err, os.ErrClosed) && !errors.Is(err, syscall.EPIPE) {
		return err
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-p.exited:
	case <-t.C:
		_ = p.Kill()
		return fmt.Errorf("worker %s did not stop within %v; killed it", p.Spec.ID, timeout)
	}
	if st := p.cmd.ProcessState; st != nil && !st.Success() {
		return fmt.Errorf("worker %s did not stop cleanly: %v", p.Spec.ID, st)
	}
	return nil
}

// Kill SIGKILLs the worker and waits until it has exited.
func (p *Proc) Kill() error {
	p.mu.Lock()
	p.stopped = true
	p.mu.Unlock()
	if err := p.cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return err
	}
	<-p.exited
	return nil
}
