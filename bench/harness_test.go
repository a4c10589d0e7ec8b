package bench

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

// scripted is a Runner whose launches follow a script; it records the order
// of launches across runners in log.
type scripted struct {
	name     string
	setupErr error
	exit     []time.Duration // per launch, cycled
	failAt   map[int]bool    // launch index -> fail
	log      *[]string
	mu       *sync.Mutex
	n        int
	closed   bool
	onLaunch func(n int)
}

func (s *scripted) Name() string                    { return s.name }
func (s *scripted) Describe() string                { return "scripted " + s.name }
func (s *scripted) Setup(ctx context.Context) error { return s.setupErr }
func (s *scripted) Close() error                    { s.closed = true; return nil }
func (s *scripted) Launch(ctx context.Context) (Sample, error) {
	s.mu.Lock()
	i := s.n
	s.n++
	*s.log = append(*s.log, s.name)
	s.mu.Unlock()
	if s.onLaunch != nil {
		s.onLaunch(i)
	}
	if s.failAt[i] {
		return Sample{}, fmt.Errorf("launch %d broke", i)
	}
	d := s.exit[i%len(s.exit)]
	return Sample{Exit: d, Ready: d / 2, HasReady: true}, nil
}

func newScripted(log *[]string, mu *sync.Mutex, name string, exit ...time.Duration) *scripted {
	return &scripted{name: name, exit: exit, log: log, mu: mu, failAt: map[int]bool{}}
}

func TestRunInterleavesAndExcludesWarmup(t *testing.T) {
	var log []string
	var mu sync.Mutex
	a := newScripted(&log, &mu, "a", time.Millisecond)
	b := newScripted(&log, &mu, "b", 2*time.Millisecond)
	c := newScripted(&log, &mu, "c", 4*time.Millisecond)
	c.setupErr = errors.New("no such thing here")
	var progress []int
	rep, err := Run(context.Background(), []Runner{a, b, c}, Options{Runs: 3, Warmup: 1, Progress: func(done, total int, _ string) {
		progress = append(progress, done)
		if total != 8 {
			t.Errorf("total %d, want 8", total)
		}
	}})
	if err != nil {
		t.Fatal(err)
	}
	// Rounds rotate the starting path: ab, ba, ab, ba.
	if got := strings.Join(log, ""); got != "abbaabba" {
		t.Errorf("launch order %s, want abbaabba", got)
	}
	if len(progress) != 8 || progress[7] != 8 {
		t.Errorf("progress %v", progress)
	}
	pa := rep.Path("a")
	if len(pa.Samples) != 3 || len(pa.Warmup) != 1 || pa.Warmup[0].Round != -1 || pa.Samples[0].Round != 0 {
		t.Errorf("a: %d samples, %d warm-up", len(pa.Samples), len(pa.Warmup))
	}
	if pa.Exit.N != 3 || pa.Exit.Mean != time.Millisecond || pa.Ready.Mean != 500*time.Microsecond {
		t.Errorf("a stats %+v %+v", pa.Exit, pa.Ready)
	}
	pc := rep.Path("c")
	if pc.Available || pc.Why != "no such thing here" || len(pc.Samples) != 0 {
		t.Errorf("c: %+v", pc)
	}
	if !a.closed || !b.closed || !c.closed {
		t.Error("not every runner was closed")
	}
	s, ok := rep.Summarise("exit")
	if !ok || s.Fastest != "a" || len(s.Slower) != 1 || s.Slower[0].Name != "b" || s.Slower[0].Ratio != 2 {
		t.Errorf("summary %+v", s)
	}
}

func TestRunCountsFailuresWithoutAveraging(t *testing.T) {
	var log []string
	var mu sync.Mutex
	a := newScripted(&log, &mu, "a", 10*time.Millisecond)
	a.failAt = map[int]bool{1: true, 3: true}
	rep, err := Run(context.Background(), []Runner{a}, Options{Runs: 4})
	if err != nil {
		t.Fatal(err)
	}
	p := rep.Path("a")
	if p.Failed != 2 || p.Exit.N != 2 || len(p.Samples) != 4 {
		t.Errorf("failed %d, stats over %d of %d samples", p.Failed, p.Exit.N, len(p.Samples))
	}
	if p.Exit.Mean != 10*time.Millisecond || p.Exit.Min != 10*time.Millisecond {
		t.Errorf("failed samples leaked into the stats: %+v", p.Exit)
	}
	if !strings.Contains(p.FirstError(), "launch 1 broke") {
		t.Errorf("first error %q", p.FirstError())
	}
	// All failed: no stats, path not usable.
	b := newScripted(&log, &mu, "b", time.Millisecond)
	b.failAt = map[int]bool{0: true, 1: true}
	rep, _ = Run(context.Background(), []Runner{b}, Options{Runs: 2})
	if pb := rep.Path("b"); pb.Exit != nil || pb.Usable() || pb.Failed != 2 {
		t.Errorf("all-failed path %+v", pb)
	}
}

func TestRunCancelStopsAndCloses(t *testing.T) {
	var log []string
	var mu sync.Mutex
	ctx, cancel := context.WithCancel(context.Background())
	a := newScripted(&log, &mu, "a", time.Millisecond)
	b := newScripted(&log, &mu, "b", time.Millisecond)
	a.onLaunch = func(n int) {
		if n == 2 {
			cancel()
		}
	}
	rep, err := Run(ctx, []Runner{a, b}, Options{Runs: 100})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err %v, want canceled", err)
	}
	if !rep.Interrupted || !a.closed || !b.closed {
		t.Errorf("interrupted %v, closed %v %v", rep.Interrupted, a.closed, b.closed)
	}
	if n := len(rep.Path("a").Samples); n != 2 {
		t.Errorf("a has %d samples; the cancelled launch must not count", n)
	}
}

func TestRunParallelThroughput(t *testing.T) {
	var log []string
	var mu sync.Mutex
	a := newScripted(&log, &mu, "a", time.Millisecond)
	a.onLaunch = func(int) { time.Sleep(20 * time.Millisecond) }
	rep, err := Run(context.Background(), []Runner{a}, Options{Runs: 2, Parallel: 4})
	if err != nil {
		t.Fatal(err)
	}
	p := rep.Path("a")
	if len(p.Samples) != 8 || p.Throughput == nil || p.Throughput.N != 2 || p.Throughput.Mean <= 0 {
		t.Errorf("samples %d, throughput %+v", len(p.Samples), p.Throughput)
	}
}

func TestRunTimeoutIsAFailedSample(t *testing.T) {
	slow := &slowRunner{}
	rep, err := Run(context.Background(), []Runner{slow}, Options{Runs: 1, Timeout: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	p := rep.Path("slow")
	if p.Failed != 1 || !strings.Contains(p.FirstError(), "timed out after 50ms") {
		t.Errorf("failed %d, error %q", p.Failed, p.FirstError())
	}
}

type slowRunner struct{}

func (slowRunner) Name() string                { return "slow" }
func (slowRunner) Describe() string            { return "never ends" }
func (slowRunner) Setup(context.Context) error { return nil }
func (slowRunner) Close() error                { return nil }
func (slowRunner) Launch(ctx context.Context) (Sample, error) {
	<-ctx.Done()
	return Sample{}, ctx.Err()
}

func TestOptionsValidate(t *testing.T) {
	for _, tc := range []struct {
		o    Options
		want string
	}{
		{Options{Runs: 0}, "at least 1"},
		{Options{Runs: 1, Warmup: -1}, "warmup"},
		{Options{Runs: 1, Parallel: -2}, "parallel"},
	} {
		if err := tc.o.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Validate(%+v) = %v", tc.o, err)
		}
	}
	if _, err := Run(context.Background(), nil, Options{Runs: 1}); err == nil {
		t.Error("Run with no runners did not fail")
	}
	if _, err := Run(context.Background(), []Runner{slowRunner{}}, Options{Runs: 0}); !errors.Is(err, ErrNoRuns) {
		t.Errorf("Runs 0: %v", err)
	}
}

func TestSelectRunners(t *testing.T) {
	var log []string
	var mu sync.Mutex
	all := []Runner{newScripted(&log, &mu, "a"), newScripted(&log, &mu, "b"), newScripted(&log, &mu, "c")}
	got, err := SelectRunners(all, "c, a,c")
	if err != nil || strings.Join(Names(got), ",") != "c,a" {
		t.Errorf("SelectRunners = %v, %v", Names(got), err)
	}
	if got, _ := SelectRunners(all, ""); len(got) != 3 {
		t.Error("empty list is not all")
	}
	if _, err := SelectRunners(all, "a,zz"); err == nil || !strings.Contains(err.Error(), "known: a, b, c") {
		t.Errorf("unknown path: %v", err)
	}
	if _, err := SelectRunners(all, " , "); err == nil {
		t.Error("blank list did not fail")
	}
}
