// Package bench measures startup of the same trivial workload down every
// path microvm knows — tiny guests on microvm's own VMM (in process and as a
// whole process), the least a VMM can do (kvm-floor), QEMU's microvm machine,
// the in-process container launcher, runc, crun, podman, docker, and with a
// kernel a Linux microVM and a libvirt domain — interleaved so that drift of
// the machine hits all paths alike. It reports hyperfine-style statistics
// (text, JSON, Markdown) and draws the distributions.
//
// Two figures per launch: launch→ready (a tiny guest's write to port 0x502;
// for a container, the workload's first instruction writing fd 3) and
// launch→exit (the guest or workload has ended and its VM or container is
// torn down).
package bench

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sort"
	"strings"
	"sync"
	"time"
)

// Sample is one launch of one path.
type Sample struct {
	// Round is the interleaving round the sample belongs to (warm-up rounds
	// are negative).
	Round int `json:"round"`
	// Ready is launch→ready; HasReady is false when the path could not
	// observe it for this launch.
	Ready    time.Duration `json:"ready_ns,omitempty"`
	HasReady bool          `json:"has_ready"`
	// Exit is launch→exit.
	Exit time.Duration `json:"exit_ns"`
	// Err is why the launch failed ("" for a good sample). A failed sample
	// is reported and counted, never averaged in.
	Err string `json:"error,omitempty"`
}

// Failed reports whether the sample failed.
func (s Sample) Failed() bool { return s.Err != "" }

// Runner launches the benchmark workload down one path.
type Runner interface {
	// Name is the path's short name (vm, vm-proc, kvm-floor, qemu, container,
	// runc, crun, podman, docker, linux, libvirt).
	Name() string
	// Describe says in a few words what one launch is.
	Describe() string
	// Setup does the one-time preparation; an error means "not available"
	// and says why.
	Setup(ctx context.Context) error
	// Launch runs the workload once. Errors of the path itself (the
	// runtime failed, the guest crashed, a bad status) are returned as
	// errors and become failed samples.
	Launch(ctx context.Context) (Sample, error)
	// Close releases what Setup made (and anything a cancelled launch left).
	Close() error
}

// Options control a benchmark run.
type Options struct {
	// Runs is the number of measured launches per path (≥ 1).
	Runs int
	// Warmup is the number of discarded launches per path before measuring.
	Warmup int
	// Parallel > 1 launches that many instances of a path at once per
	// round, and reports launches per second.
	Parallel int
	// Timeout bounds one launch (default 60 s).
	Timeout time.Duration
	// Progress, when set, is told about every finished launch.
	Progress func(done, total int, path string)
}

// PathResult is everything measured for one path.
type PathResult struct {
	Name        string `json:"name"`
	Description string `json:"description"`
	// Available is false when Setup failed; Why then says why.
	Available bool   `json:"available"`
	Why       string `json:"why,omitempty"`
	// Samples are the measured launches (warm-ups excluded), failed ones
	// included; Warmup are the warm-up launches.
	Samples []Sample `json:"samples"`
	Warmup  []Sample `json:"warmup,omitempty"`
	// Failed counts failed measured samples; they are not in the statistics.
	Failed int `json:"failed"`
	// Ready and Exit are the statistics over the successful samples (Ready
	// over those that observed it).
	Ready *Stats `json:"ready,omitempty"`
	Exit  *Stats `json:"exit,omitempty"`
	// Throughput is launches per second per round (Parallel > 1 only).
	Throughput *FloatStats `json:"launches_per_second,omitempty"`
}

// Usable reports whether the path has statistics to compare.
func (p *PathResult) Usable() bool { return p.Available && p.Exit != nil && p.Exit.N > 0 }

// Report is a whole benchmark run.
type Report struct {
	Started  time.Time     `json:"started"`
	Duration time.Duration `json:"duration_ns"`
	Host     HostInfo      `json:"host"`
	Runs     int           `json:"runs"`
	Warmup   int           `json:"warmup"`
	Parallel int           `json:"parallel"`
	Paths    []*PathResult `json:"paths"`
	// Interrupted is set when the run was cut short (Ctrl-C); the figures
	// cover what was measured until then.
	Interrupted bool `json:"interrupted,omitempty"`
}

// HostInfo describes where the benchmark ran.
type HostInfo struct {
	CPUs      int    `json:"cpus"`
	GOOS      string `json:"goos"`
	GOARCH    string `json:"goarch"`
	Kernel    string `json:"kernel,omitempty"`
	KVMModule string `json:"kvm_module,omitempty"`
}

// ErrNoRuns is returned for Options.Runs < 1.
var ErrNoRuns = errors.New("bench: --runs must be at least 1")

// Validate checks the options.
func (o Options) Validate() error {
	if o.Runs < 1 {
		return ErrNoRuns
	}
	if o.Warmup < 0 {
		return errors.New("bench: --warmup must not be negative")
	}
	if o.Parallel < 0 {
		return errors.New("bench: --parallel must not be negative")
	}
	if o.Timeout < 0 {
		return errors.New("bench: --timeout must not be negative")
	}
	return nil
}

// Run sets every runner up, launches them interleaved — round r launches
// each path once (Parallel times at once with Parallel > 1), starting with
// path r mod n so that no path always follows the same one — and closes
// them all, also when ctx is cancelled (the report then holds what was
// measured and Interrupted is set; the error is ctx's).
func Run(ctx context.Context, runners []Runner, o Options) (*Report, error) {
	if err := o.Validate(); err != nil {
		return nil, err
	}
	if len(runners) == 0 {
		return nil, errors.New("bench: no paths to run")
	}
	if o.Timeout == 0 {
		o.Timeout = 60 * time.Second
	}
	par := max(o.Parallel, 1)
	rep := &Report{Started: time.Now(), Host: hostInfo(), Runs: o.Runs, Warmup: o.Warmup, Parallel: par}
	var live []int
	defer func() {
		for _, r := range runners {
			_ = r.Close() // Close is safe on a runner whose Setup failed
		}
	}()
	for i, r := range runners {
		pr := &PathResult{Name: r.Name(), Description: r.Describe(), Available: true}
		rep.Paths = append(rep.Paths, pr)
		if err := ctx.Err(); err != nil {
			rep.Interrupted = true
			return rep, err
		}
		if err := r.Setup(ctx); err != nil {
			pr.Available, pr.Why = false, err.Error()
			continue
		}
		live = append(live, i)
	}
	total := (o.Runs + o.Warmup) * len(live) * par
	done := 0
	throughput := make(map[int][]float64)
	var runErr error
rounds:
	for round := -o.Warmup; round < o.Runs; round++ {
		k := round + o.Warmup
		for j := range live {
			i := live[(j+k)%len(live)]
			if err := ctx.Err(); err != nil {
				runErr = err
				break rounds
			}
			samples, wall := launchRound(ctx, runners[i], par, o.Timeout, round)
			if ctx.Err() != nil {
				// A launch cut short by Ctrl-C is no sample.
				runErr = ctx.Err()
				break rounds
			}
			pr := rep.Paths[i]
			if round < 0 {
				pr.Warmup = append(pr.Warmup, samples...)
			} else {
				pr.Samples = append(pr.Samples, samples...)
				if par > 1 && wall > 0 {
					ok := 0
					for _, s := range samples {
						if !s.Failed() {
							ok++
						}
					}
					throughput[i] = append(throughput[i], float64(ok)/wall.Seconds())
				}
			}
			done += len(samples)
			if o.Progress != nil {
				o.Progress(done, total, pr.Name)
			}
		}
	}
	for i, pr := range rep.Paths {
		pr.summarise()
		if t := throughput[i]; len(t) > 0 {
			fs := ComputeFloatStats(t)
			pr.Throughput = &fs
		}
	}
	rep.Duration = time.Since(rep.Started)
	if runErr != nil {
		rep.Interrupted = true
	}
	return rep, runErr
}

// launchRound launches r par times at once and returns the samples and the
// wall time of the round.
func launchRound(ctx context.Context, r Runner, par int, timeout time.Duration, round int) ([]Sample, time.Duration) {
	out := make([]Sample, par)
	var wg sync.WaitGroup
	t0 := time.Now()
	for p := 0; p < par; p++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			lctx, cancel := context.WithTimeout(ctx, timeout)
			defer cancel()
			s, err := r.Launch(lctx)
			if err != nil {
				if errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
					err = fmt.Errorf("timed out after %v: %w", timeout, err)
				}
				s.Err = err.Error()
				if s.Err == "" {
					s.Err = "failed"
				}
			}
			s.Round = round
			out[p] = s
		}()
	}
	wg.Wait()
	return out, time.Since(t0)
}

// summarise computes the statistics over the successful samples.
func (p *PathResult) summarise() {
	if !p.Available {
		return
	}
	var ready, exit []time.Duration
	p.Failed = 0
	for _, s := range p.Samples {
		if s.Failed() {
			p.Failed++
			continue
		}
		exit = append(exit, s.Exit)
		if s.HasReady {
			ready = append(ready, s.Ready)
		}
	}
	if len(exit) > 0 {
		st := ComputeStats(exit)
		p.Exit = &st
	}
	if len(ready) > 0 {
		st := ComputeStats(ready)
		p.Ready = &st
	}
}

// FirstError returns the first failed sample's error ("" when none failed).
func (p *PathResult) FirstError() string {
	for _, s := range p.Samples {
		if s.Failed() {
			return s.Err
		}
	}
	return ""
}

// Comparison is one line of the relative summary.
type Comparison struct {
	Name  string  `json:"name"`
	Ratio float64 `json:"ratio"` // of the means
	Sigma float64 `json:"sigma"`
	// MedianRatio is the ratio of the medians, robust against the long
	// tails a busy host gives.
	MedianRatio float64 `json:"median_ratio"`
}

// Summary is the relative summary for one figure: how many times faster
// the fastest path (by mean) ran than each other one.
type Summary struct {
	Figure  string       `json:"figure"` // "ready" or "exit"
	Fastest string       `json:"fastest"`
	Slower  []Comparison `json:"slower"`
}

// Summarise ranks the usable paths by the mean of figure ("ready" or
// "exit"). ok is false when fewer than one path has the figure.
func (rep *Report) Summarise(figure string) (Summary, bool) {
	type entry struct {
		name string
		st   Stats
	}
	var es []entry
	for _, p := range rep.Paths {
		if !p.Usable() {
			continue
		}
		st := p.Exit
		if figure == "ready" {
			st = p.Ready
		}
		if st == nil || st.N == 0 {
			continue
		}
		es = append(es, entry{p.Name, *st})
	}
	if len(es) == 0 {
		return Summary{}, false
	}
	sort.SliceStable(es, func(i, j int) bool { return es[i].st.Mean < es[j].st.Mean })
	s := Summary{Figure: figure, Fastest: es[0].name}
	for _, e := range es[1:] {
		r, sg, ok := Ratio(es[0].st, e.st)
		if ok {
			c := Comparison{Name: e.name, Ratio: r, Sigma: sg}
			if es[0].st.Median > 0 {
				c.MedianRatio = float64(e.st.Median) / float64(es[0].st.Median)
			}
			s.Slower = append(s.Slower, c)
		}
	}
	return s, true
}

// Path returns the named path's result, or nil.
func (rep *Report) Path(name string) *PathResult {
	for _, p := range rep.Paths {
		if p.Name == name {
			return p
		}
	}
	return nil
}

// SelectRunners filters all by a comma-separated list of names (empty:
// all), keeping the order of the list. Unknown names are an error that
// lists the known ones.
func SelectRunners(all []Runner, list string) ([]Runner, error) {
	return selectByName(all, func(r Runner) string { return r.Name() }, list)
}

// selectByName is SelectRunners for any kind of path: duplicates and
// blanks in list are dropped, an unknown name is an error.
func selectByName[T any](all []T, name func(T) string, list string) ([]T, error) {
	if strings.TrimSpace(list) == "" {
		return all, nil
	}
	byName := map[string]T{}
	var names []string
	for _, r := range all {
		byName[name(r)] = r
		names = append(names, name(r))
	}
	var out []T
	seen := map[string]bool{}
	for _, n := range strings.Split(list, ",") {
		n = strings.TrimSpace(n)
		if n == "" || seen[n] {
			continue
		}
		r, ok := byName[n]
		if !ok {
			return nil, fmt.Errorf("bench: unknown path %q (known: %s)", n, strings.Join(names, ", "))
		}
		seen[n] = true
		out = append(out, r)
	}
	if len(out) == 0 {
		return nil, errors.New("bench: --paths names no path")
	}
	return out, nil
}

func hostInfo() HostInfo {
	h := HostInfo{CPUs: runtime.NumCPU(), GOOS: runtime.GOOS, GOARCH: runtime.GOARCH}
	h.Kernel = kernelRelease()
	h.KVMModule = kvmModule()
	return h
}
