package libvirt

import (
	"context"
	"fmt"
	"sync"
	"time"

	golibvirt "github.com/digitalocean/go-libvirt"
)

// LifecycleEvent is one domain lifecycle event (virDomainEventType and its
// detail), stamped with the time it arrived here.
type LifecycleEvent struct {
	Domain string
	UUID   string
	Event  int32
	Detail int32
	At     time.Time
}

func (e LifecycleEvent) String() string {
	return fmt.Sprintf("%s: %s", e.Domain, EventName(e.Event, e.Detail))
}

// eventHub is a connection's one subscription to go-libvirt's
// LifecycleEvents, fanned out to any number of watchers.
//
// The subscription lives as long as the connection: go-libvirt shuts its
// event queue down before it deregisters the callback, and an event that
// arrives in between blocks its reader goroutine for good (every later reply
// on the connection is lost). So the subscription is never cancelled while
// the socket is open; Conn.Close closes the socket first, which ends it.
// Its channel is drained by one goroutine until go-libvirt closes it,
// whether or not any watcher is listening.
type eventHub struct {
	mu      sync.Mutex
	started bool
	ended   bool
	subs    map[*watcher]struct{}
	cancel  context.CancelFunc
	done    chan struct{}
}

// watcher queues the events of one waiter, without bound.
type watcher struct {
	hub    *eventHub
	mu     sync.Mutex
	queue  []LifecycleEvent
	closed bool
	signal chan struct{}
}

// watchLifecycle returns a watcher that sees every lifecycle event from now
// on, subscribing the connection on first use.
func (c *Conn) watchLifecycle(ctx context.Context) (*watcher, error) {
	h := &c.events
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.ended {
		return nil, c.wrap("subscribe to lifecycle events", "", fmt.Errorf("%w: the event subscription ended", ErrConnectionLost))
	}
	if !h.started {
		sctx, cancel := context.WithCancel(context.Background())
		var ch <-chan golibvirt.DomainEventLifecycleMsg
		err := c.call(ctx, "subscribe to lifecycle events", "", func() (err error) {
			ch, err = c.lv.LifecycleEvents(sctx)
			return err
		})
		if err != nil {
			cancel()
			return nil, err
		}
		h.started, h.cancel, h.done = true, cancel, make(chan struct{})
		h.subs = make(map[*watcher]struct{})
		go h.drain(ch)
	}
	w := &watcher{hub: h, signal: make(chan struct{}, 1)}
	h.subs[w] = struct{}{}
	return w, nil
}

func (h *eventHub) drain(ch <-chan golibvirt.DomainEventLifecycleMsg) {
	defer close(h.done)
	for m := range ch {
		ev := LifecycleEvent{Domain: m.Dom.Name, UUID: formatUUID(m.Dom.UUID), Event: m.Event, Detail: m.Detail, At: time.Now()}
		h.mu.Lock()
		for w := range h.subs {
			w.push(ev)
		}
		h.mu.Unlock()
	}
	h.mu.Lock()
	h.ended = true
	for w := range h.subs {
		w.end()
	}
	h.mu.Unlock()
}

// stop ends the subscription; call it only once the socket is closed.
func (h *eventHub) stop() {
	h.mu.Lock()
	started, cancel, done := h.started, h.cancel, h.done
	h.mu.Unlock()
	if !started {
		return
	}
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
	}
}

func (w *watcher) push(ev LifecycleEvent) {
	w.mu.Lock()
	w.queue = append(w.queue, ev)
	w.mu.Unlock()
	w.poke()
}

func (w *watcher) end() {
	w.mu.Lock()
	w.closed = true
	w.mu.Unlock()
	w.poke()
}

func (w *watcher) poke() {
	select {
	case w.signal <- struct{}{}:
	default:
	}
}

// next pops the oldest queued event; ok is false when none is queued.
// closed reports that no more events will come.
func (w *watcher) next() (ev LifecycleEvent, ok, closed bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.queue) == 0 {
		return LifecycleEvent{}, false, w.closed
	}
	ev = w.queue[0]
	w.queue = w.queue[1:]
	return ev, true, false
}

// waitFor returns the first queued or arriving event of the domain whose
// type is one of want. It fails with ErrTimeout after timeout, with
// ErrConnectionLost when the subscription ends, or when ctx ends.
func (w *watcher) waitFor(ctx context.Context, uuid golibvirt.UUID, timeout time.Duration, want ...int32) (LifecycleEvent, error) {
	id := formatUUID(uuid)
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		for {
			ev, ok, closed := w.next()
			if closed {
				return LifecycleEvent{}, fmt.Errorf("%w: the event subscription ended", ErrConnectionLost)
			}
			if !ok {
				break
			}
			if ev.UUID != id {
				continue
			}
			for _, t := range want {
				if ev.Event == t {
					return ev, nil
				}
			}
		}
		select {
		case <-w.signal:
		case <-timer.C:
			names := ""
			for i, t := range want {
				if i > 0 {
					names += " or "
				}
				names += EventName(t, -1)
			}
			return LifecycleEvent{}, fmt.Errorf("%w: no %q event within %s", ErrTimeout, names, timeout)
		case <-ctx.Done():
			return LifecycleEvent{}, ctx.Err()
		}
	}
}

// Close stops queueing events for this watcher. The connection's
// subscription stays.
func (w *watcher) Close() {
	w.hub.mu.Lock()
	delete(w.hub.subs, w)
	w.hub.mu.Unlock()
}

// Events streams lifecycle events of all domains to fn until ctx ends or
// the connection is lost; fn runs on one goroutine, in order.
func (c *Conn) Events(ctx context.Context, fn func(LifecycleEvent)) error {
	w, err := c.watchLifecycle(ctx)
	if err != nil {
		return err
	}
	defer w.Close()
	for {
		for {
			ev, ok, closed := w.next()
			if closed {
				return c.wrap("watch events", "", fmt.Errorf("%w: the event subscription ended", ErrConnectionLost))
			}
			if !ok {
				break
			}
			fn(ev)
		}
		select {
		case <-w.signal:
		case <-ctx.Done():
			return nil
		}
	}
}
