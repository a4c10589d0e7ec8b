package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// unit picks the display unit for a duration, as hyperfine does: the unit
// of the mean is used for every number of a figure.
type unit struct {
	name string
	div  float64
}

func unitFor(d time.Duration) unit {
	switch {
	case d >= time.Second:
		return unit{"s", float64(time.Second)}
	case d >= time.Millisecond:
		return unit{"ms", float64(time.Millisecond)}
	default:
		return unit{"µs", float64(time.Microsecond)}
	}
}

func (u unit) f(d time.Duration) string {
	v := float64(d) / u.div
	switch {
	case v >= 100:
		return fmt.Sprintf("%.1f", v)
	case v >= 10:
		return fmt.Sprintf("%.2f", v)
	default:
		return fmt.Sprintf("%.3f", v)
	}
}

// WriteText writes the hyperfine-like report: per path the two figures
// with Time (mean ± σ), median, Range (min … max) and runs, failed samples
// and unavailable paths, then the relative summaries.
func WriteText(w io.Writer, rep *Report) error {
	ew := &errWriter{w: w}
	fmt.Fprintf(ew, "microvm bench: %d runs + %d warm-up per path, paths interleaved, %d at once; %d CPUs, kernel %s, KVM module %s\n\n",
		rep.Runs, rep.Warmup, rep.Parallel, rep.Host.CPUs, rep.Host.Kernel, rep.Host.KVMModule)
	for _, p := range rep.Paths {
		fmt.Fprintf(ew, "Path %s: %s\n", bold(p.Name), p.Description)
		if !p.Available {
			fmt.Fprintf(ew, "  not available: %s\n\n", p.Why)
			continue
		}
		if p.Exit == nil {
			fmt.Fprintf(ew, "  no successful runs (%d of %d failed; first error: %s)\n\n", p.Failed, len(p.Samples), p.FirstError())
			continue
		}
		writeFigure(ew, "launch→ready", p.Ready, "not observed on this path")
		writeFigure(ew, "launch→exit ", p.Exit, "")
		if p.Throughput != nil {
			t := p.Throughput
			fmt.Fprintf(ew, "  %s  %.1f ± %.1f launches/s with %d at once   (min … max: %.1f … %.1f)\n",
				"throughput  ", t.Mean, t.StdDev, rep.Parallel, t.Min, t.Max)
		}
		if p.Failed > 0 {
			fmt.Fprintf(ew, "  %s %d of %d runs FAILED and are not in the figures; first error: %s\n",
				warn("Warning:"), p.Failed, len(p.Samples), p.FirstError())
		}
		fmt.Fprintln(ew)
	}
	for _, fig := range []string{"exit", "ready"} {
		s, ok := rep.Summarise(fig)
		if !ok || len(s.Slower) == 0 {
			continue
		}
		fmt.Fprintf(ew, "%s (launch→%s)\n", bold("Summary"), fig)
		fmt.Fprintf(ew, "  %s ran\n", bold(s.Fastest))
		for _, c := range s.Slower {
			fmt.Fprintf(ew, "  %8.2f ± %.2f times faster than %-10s (medians: %.2f×)\n", c.Ratio, c.Sigma, c.Name, c.MedianRatio)
		}
		fmt.Fprintln(ew)
	}
	if rep.Interrupted {
		fmt.Fprintf(ew, "%s the run was interrupted; the figures cover the launches finished before.\n", warn("Note:"))
	}
	return ew.err
}

func writeFigure(w io.Writer, label string, st *Stats, missing string) {
	if st == nil || st.N == 0 {
		if missing != "" {
			fmt.Fprintf(w, "  %s  %s\n", label, missing)
		}
		return
	}
	u := unitFor(st.Mean)
	fmt.Fprintf(w, "  %s  Time (%s ± %s):   %8s %s ± %6s %s    [median %s %s]\n",
		label, green("mean"), green("σ"), u.f(st.Mean), u.name, u.f(st.StdDev), u.name, u.f(st.Median), u.name)
	fmt.Fprintf(w, "  %s  Range (%s … %s): %8s %s … %6s %s    %d runs\n",
		strings.Repeat(" ", len([]rune(label))), cyan("min"), purple("max"), u.f(st.Min), u.name, u.f(st.Max), u.name, st.N)
}

// Text styling hooks: the report is plain text (it is often piped or
// saved), so they return s unchanged.
func bold(s string) string   { return s }
func green(s string) string  { return s }
func cyan(s string) string   { return s }
func purple(s string) string { return s }
func warn(s string) string   { return s }

type errWriter struct {
	w   io.Writer
	err error
}

func (e *errWriter) Write(p []byte) (int, error) {
	if e.err != nil {
		return 0, e.err
	}
	n, err := e.w.Write(p)
	e.err = err
	return n, err
}

// WriteJSON writes the whole report, every sample included.
func WriteJSON(w io.Writer, rep *Report) error {
	type summaryOut struct {
		Exit  *Summary `json:"exit,omitempty"`
		Ready *Summary `json:"ready,omitempty"`
	}
	var sum summaryOut
	if s, ok := rep.Summarise("exit"); ok {
		sum.Exit = &s
	}
	if s, ok := rep.Summarise("ready"); ok {
		sum.Ready = &s
	}
	out := struct {
		*Report
		Summary summaryOut `json:"summary"`
	}{rep, sum}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(out)
}

// WriteMarkdown writes hyperfine-style tables (one per figure, times in
// ms, with the relative column) followed by every sample of every path.
func WriteMarkdown(w io.Writer, rep *Report) error {
	ew := &errWriter{w: w}
	ms := func(d time.Duration) string { return fmt.Sprintf("%.3f", float64(d)/1e6) }
	for _, fig := range []string{"exit", "ready"} {
		sum, ok := rep.Summarise(fig)
		if !ok {
			continue
		}
		rel := map[string]Comparison{}
		for _, c := range sum.Slower {
			rel[c.Name] = c
		}
		fmt.Fprintf(ew, "### launch→%s\n\n", fig)
		fmt.Fprintf(ew, "| Path | Mean [ms] | Median [ms] | Min [ms] | Max [ms] | Runs | Failed | Relative |\n")
		fmt.Fprintf(ew, "|:---|---:|---:|---:|---:|---:|---:|---:|\n")
		for _, p := range rep.Paths {
			if !p.Available {
				continue
			}
			st := p.Exit
			if fig == "ready" {
				st = p.Ready
			}
			if st == nil {
				if fig == "exit" {
					fmt.Fprintf(ew, "| `%s` | – | – | – | – | 0 | %d | failed |\n", p.Name, p.Failed)
				}
				continue
			}
			relS := "1.00"
			if c, ok := rel[p.Name]; ok {
				relS = fmt.Sprintf("%.2f ± %.2f", c.Ratio, c.Sigma)
			}
			fmt.Fprintf(ew, "| `%s` | %s ± %s | %s | %s | %s | %d | %d | %s |\n",
				p.Name, ms(st.Mean), ms(st.StdDev), ms(st.Median), ms(st.Min), ms(st.Max), st.N, p.Failed, relS)
		}
		fmt.Fprintln(ew)
	}
	var na []string
	for _, p := range rep.Paths {
		if !p.Available {
			na = append(na, fmt.Sprintf("- `%s`: not available: %s", p.Name, mdEscape(p.Why)))
		}
	}
	if len(na) > 0 {
		fmt.Fprintf(ew, "### Not available\n\n%s\n\n", strings.Join(na, "\n"))
	}
	fmt.Fprintf(ew, "### Samples\n\n")
	fmt.Fprintf(ew, "Host: %d CPUs, %s/%s, kernel %s, KVM module %s. %d runs and %d warm-up runs per path, %d at once; paths interleaved.\n\n",
		rep.Host.CPUs, rep.Host.GOOS, rep.Host.GOARCH, rep.Host.Kernel, rep.Host.KVMModule, rep.Runs, rep.Warmup, rep.Parallel)
	for _, p := range rep.Paths {
		if !p.Available || len(p.Samples) == 0 {
			continue
		}
		fmt.Fprintf(ew, "<details><summary><code>%s</code>: %d samples</summary>\n\n", p.Name, len(p.Samples))
		fmt.Fprintf(ew, "| # | Round | launch→ready [ms] | launch→exit [ms] | Error |\n|---:|---:|---:|---:|:---|\n")
		for i, s := range p.Samples {
			ready := "–"
			if s.HasReady {
				ready = ms(s.Ready)
			}
			exit := ms(s.Exit)
			if s.Failed() {
				exit = "–"
			}
			fmt.Fprintf(ew, "| %d | %d | %s | %s | %s |\n", i+1, s.Round, ready, exit, mdEscape(s.Err))
		}
		fmt.Fprintf(ew, "\n</details>\n\n")
	}
	return ew.err
}

func mdEscape(s string) string {
	s = strings.ReplaceAll(s, "|", `\|`)
	return strings.ReplaceAll(s, "\n", " ")
}

func kernelRelease() string {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return ""
	}
	return unix.ByteSliceToString(u.Release[:])
}

// kvmModule names the loaded KVM module (kvm_intel, kvm_amd, kvm_pvm).
func kvmModule() string {
	for _, m := range []string{"kvm_pvm", "kvm_intel", "kvm_amd"} {
		if _, err := os.Stat("/sys/module/" + m); err == nil {
			return m
		}
	}
	return "none"
}
