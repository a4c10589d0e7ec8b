package bench

import (
	"bytes"
	"encoding/json"
	"encoding/xml"
	"image/color"
	"image/png"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// sampleReport is a report as Run makes it: two usable paths, one with a
// failed sample, one path not available.
func sampleReport() *Report {
	mk := func(round int, ready, exit time.Duration, err string) Sample {
		return Sample{Round: round, Ready: ready, HasReady: ready > 0, Exit: exit, Err: err}
	}
	rep := &Report{Runs: 3, Warmup: 1, Parallel: 1, Host: HostInfo{CPUs: 2, GOOS: "linux", GOARCH: "amd64", Kernel: "6.1", KVMModule: "kvm_pvm"}}
	rep.Paths = []*PathResult{
		{Name: "vm", Description: "tiny guest", Available: true, Samples: []Sample{
			mk(0, 400*time.Microsecond, 900*time.Microsecond, ""),
			mk(1, 500*time.Microsecond, 1000*time.Microsecond, ""),
			mk(2, 600*time.Microsecond, 1100*time.Microsecond, ""),
		}},
		{Name: "runc", Description: "runc run", Available: true, Samples: []Sample{
			mk(0, 18*time.Millisecond, 20*time.Millisecond, ""),
			mk(1, 0, 0, "runc: exit status 1 | boom"),
			mk(2, 20*time.Millisecond, 22*time.Millisecond, ""),
		}},
		{Name: "docker", Description: "docker run", Available: false, Why: "no Docker daemon answers"},
	}
	for _, p := range rep.Paths {
		p.summarise()
	}
	return rep
}

func TestWriteText(t *testing.T) {
	var b bytes.Buffer
	if err := WriteText(&b, sampleReport()); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{
		"Path vm: tiny guest",
		"launch→exit   Time (mean ± σ):      1.000 ms ±  0.100 ms    [median 1.000 ms]",
		"Range (min … max):    0.900 ms …  1.100 ms    3 runs",
		"launch→ready  Time (mean ± σ):      500.0 µs ±  100.0 µs",
		"launch→exit   Time (mean ± σ):      21.00 ms ±  1.414 ms",
		"Warning: 1 of 3 runs FAILED and are not in the figures; first error: runc: exit status 1 | boom",
		"Path docker: docker run\n  not available: no Docker daemon answers",
		"microvm bench: 3 runs + 1 warm-up per path, paths interleaved, 1 at once; 2 CPUs, kernel 6.1, KVM module kvm_pvm",
		"Summary (launch→exit)\n  vm ran\n     21.00 ± 2.53 times faster than runc       (medians: 21.00×)",
		"Summary (launch→ready)",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("text report lacks %q\n--- report:\n%s", want, out)
		}
	}
}

func TestWriteMarkdown(t *testing.T) {
	var b bytes.Buffer
	if err := WriteMarkdown(&b, sampleReport()); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{
		"| Path | Mean [ms] | Median [ms] | Min [ms] | Max [ms] | Runs | Failed | Relative |",
		"| `vm` | 1.000 ± 0.100 | 1.000 | 0.900 | 1.100 | 3 | 0 | 1.00 |",
		"| `runc` | 21.000 ± 1.414 | 21.000 | 20.000 | 22.000 | 2 | 1 | 21.00 ± 2.53 |",
		"- `docker`: not available: no Docker daemon answers",
		"| 2 | 1 | – | – | runc: exit status 1 \\| boom |", // failed sample, pipe escaped
		"| 3 | 2 | 0.600 | 1.100 |  |",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("markdown lacks %q\n--- markdown:\n%s", want, out)
		}
	}
}

func TestWriteJSONHasEverySample(t *testing.T) {
	var b bytes.Buffer
	if err := WriteJSON(&b, sampleReport()); err != nil {
		t.Fatal(err)
	}
	var got struct {
		Paths []struct {
			Name      string   `json:"name"`
			Available bool     `json:"available"`
			Why       string   `json:"why"`
			Failed    int      `json:"failed"`
			Samples   []Sample `json:"samples"`
			Exit      *Stats   `json:"exit"`
		} `json:"paths"`
		Summary struct {
			Exit *Summary `json:"exit"`
		} `json:"summary"`
	}
	if err := json.Unmarshal(b.Bytes(), &got); err != nil {
		t.Fatalf("JSON does not parse: %v", err)
	}
	if len(got.Paths) != 3 || len(got.Paths[1].Samples) != 3 || got.Paths[1].Failed != 1 || got.Paths[1].Samples[1].Err == "" {
		t.Errorf("paths %+v", got.Paths)
	}
	if got.Paths[0].Exit.Mean != time.Millisecond || got.Paths[2].Available || got.Paths[2].Why == "" {
		t.Errorf("stats or availability lost: %+v", got.Paths)
	}
	if got.Summary.Exit == nil || got.Summary.Exit.Fastest != "vm" {
		t.Errorf("summary %+v", got.Summary.Exit)
	}
}

func TestUnitFor(t *testing.T) {
	for _, tc := range []struct {
		d    time.Duration
		want string
	}{
		{500 * time.Microsecond, "500.0 µs"},
		{1500 * time.Microsecond, "1.500 ms"},
		{25 * time.Millisecond, "25.00 ms"},
		{2 * time.Second, "2.000 s"},
	} {
		u := unitFor(tc.d)
		if got := u.f(tc.d) + " " + u.name; got != tc.want {
			t.Errorf("%v: %q, want %q", tc.d, got, tc.want)
		}
	}
}

func TestPlotWritesFiles(t *testing.T) {
	dir := t.TempDir()
	rep := sampleReport()

	svgPath := filepath.Join(dir, "p.svg")
	if err := Plot(rep, svgPath); err != nil {
		t.Fatalf("Plot svg: %v", err)
	}
	b, err := os.ReadFile(svgPath)
	if err != nil {
		t.Fatal(err)
	}
	// The SVG must be well-formed XML with an <svg> root and carry every
	// usable path's name, the failed-count label and both figures.
	var texts []string
	root := ""
	dec := xml.NewDecoder(bytes.NewReader(b))
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("svg does not parse as XML: %v\n%s", err, b)
		}
		switch tok := tok.(type) {
		case xml.StartElement:
			if root == "" {
				root = tok.Name.Local
			}
		case xml.CharData:
			texts = append(texts, string(tok))
		}
	}
	if root != "svg" {
		t.Errorf("svg root element %q", root)
	}
	for _, want := range []string{"vm", "runc", "(1 failed)", "launch→exit", "launch→ready", "time since launch [ms], log scale"} {
		if !slices.Contains(texts, want) {
			t.Errorf("svg lacks the text %q", want)
		}
	}
	if slices.Contains(texts, "docker") {
		t.Error("svg shows the unavailable path")
	}

	pngPath := filepath.Join(dir, "p.png")
	if err := Plot(rep, pngPath); err != nil {
		t.Fatalf("Plot png: %v", err)
	}
	f, err := os.Open(pngPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatalf("png does not decode: %v", err)
	}
	w, h := plotSize(2)
	if got := img.Bounds(); got.Dx() != w || got.Dy() != h {
		t.Errorf("png is %v, want %dx%d", got, w, h)
	}
	// Something besides the white background was drawn in each path's colours.
	colours := map[[3]uint32]bool{}
	for y := img.Bounds().Min.Y; y < img.Bounds().Max.Y; y++ {
		for x := img.Bounds().Min.X; x < img.Bounds().Max.X; x++ {
			r, g, b, _ := img.At(x, y).RGBA()
			colours[[3]uint32{r >> 8, g >> 8, b >> 8}] = true
		}
	}
	for _, c := range []color.NRGBA{exitColor, readyColor} {
		if !colours[[3]uint32{uint32(c.R), uint32(c.G), uint32(c.B)}] {
			t.Errorf("png lacks the colour %v", c)
		}
	}

	for _, bad := range []string{"p.gif", "p.pdf", "p"} {
		if err := Plot(rep, filepath.Join(dir, bad)); err == nil || !strings.Contains(err.Error(), "unknown format") {
			t.Errorf("%s: %v, want an unknown-format error", bad, err)
		}
	}
	empty := &Report{Paths: []*PathResult{{Name: "x", Available: false}}}
	if err := Plot(empty, filepath.Join(dir, "e.svg")); err == nil {
		t.Error("plot of nothing did not fail")
	}
}

func TestLogTicks(t *testing.T) {
	for _, tc := range []struct {
		lo, hi float64
		want   []float64
	}{
		{0.6, 33, []float64{1, 2, 5, 10, 20}},
		{0.3, 1.6, []float64{0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1}},
		{0.7, 1.3, []float64{0.7, 0.8, 0.9, 1}},
		{0.0011, 9000, []float64{0.01, 0.1, 1, 10, 100, 1000}},
	} {
		got := logTicks(tc.lo, tc.hi)
		if !slices.Equal(got, tc.want) {
			t.Errorf("logTicks(%g, %g) = %v, want %v", tc.lo, tc.hi, got, tc.want)
		}
	}
}

func TestProgressBar(t *testing.T) {
	var b bytes.Buffer
	p := NewProgressBar(&b)
	if got := p.line(15, 30, "runc", 3*time.Second); !strings.Contains(got, "15/30") || !strings.Contains(got, "ETA 3s") || !strings.Contains(got, "runc") {
		t.Errorf("line %q", got)
	}
	p.Update(30, 30, "vm")
	p.Finish()
	if !strings.HasPrefix(b.String(), "\r") || !strings.HasSuffix(b.String(), "\r\x1b[K") {
		t.Errorf("drawn %q", b.String())
	}
}
