package vmm

import (
	"context"
	"errors"
	"sync"
)

// Pool keeps machines built ahead of use, so that handing one out costs a
// channel receive: Get returns a machine that New (or Restore) built
// earlier, and a builder goroutine starts on its replacement at once.
// Release tears a used machine down on a goroutine of its own, off the
// caller's path. The machines come from build, e.g.
//
//	p := vmm.NewPool(4, func() (*vmm.Machine, error) { return vmm.New(cfg) })
//	defer p.Close()
//	m, err := p.Get(ctx)
//	res, err := m.Run(ctx)
//	p.Release(m)
//
// A machine's launch clock (Result.ReadyAfter, ExitAfter) starts when it
// was built; Result.SetupTime is from then until Run, so ReadyAfter -
// SetupTime is Run → ready.
type Pool struct {
	build  func() (*Machine, error)
	ready  chan built
	stop   chan struct{}
	closed chan struct{}
	wg     sync.WaitGroup
	once   sync.Once
}

type built struct {
	m   *Machine
	err error
}

// ErrPoolClosed is Get's error after Close.
var ErrPoolClosed = errors.New("vmm: pool closed")

// NewPool starts a pool that keeps size machines (at least 1) built.
func NewPool(size int, build func() (*Machine, error)) *Pool {
	size = max(size, 1)
	p := &Pool{build: build, ready: make(chan built, size), stop: make(chan struct{}), closed: make(chan struct{})}
	p.wg.Add(1)
	go p.fill()
	return p
}

// fill builds machines while there is room; a build error is handed to
// the next Get (and building goes on after it is taken).
func (p *Pool) fill() {
	defer p.wg.Done()
	for {
		m, err := p.build()
		select {
		case p.ready <- built{m, err}:
		case <-p.stop:
			if m != nil {
				m.Close()
			}
			return
		}
	}
}

// Get hands out a built machine, waiting for one if the pool is empty. The
// caller owns it: Run it, then Release (or Close) it.
func (p *Pool) Get(ctx context.Context) (*Machine, error) {
	select {
	case <-p.closed:
		return nil, ErrPoolClosed
	default:
	}
	select {
	case b := <-p.ready:
		return b.m, b.err
	case <-p.closed:
		return nil, ErrPoolClosed
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Release closes m on a goroutine of its own; Close waits for it.
func (p *Pool) Release(m *Machine) {
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		m.Close()
	}()
}

// Close stops building, closes the machines not handed out and waits for
// every Release.
func (p *Pool) Close() error {
	p.once.Do(func() {
		close(p.closed)
		close(p.stop)
	})
	// Drain while the builder may still be sending its last one.
	done := make(chan struct{})
	go func() { p.wg.Wait(); close(done) }()
	for {
		select {
		case b := <-p.ready:
			if b.m != nil {
				b.m.Close()
			}
		case <-done:
			for {
				select {
				case b := <-p.ready:
					if b.m != nil {
						b.m.Close()
					}
				default:
					return nil
				}
			}
		}
	}
}
