package bench

import (
	"math"
	"testing"
	"time"
)

func ms2d(v ...float64) []time.Duration {
	out := make([]time.Duration, len(v))
	for i, x := range v {
		out[i] = time.Duration(x * float64(time.Millisecond))
	}
	return out
}

func TestComputeStats(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   []time.Duration
		want Stats
	}{
		{"empty", nil, Stats{}},
		{"one", ms2d(5), Stats{N: 1, Mean: 5 * time.Millisecond, Median: 5 * time.Millisecond, Min: 5 * time.Millisecond, Max: 5 * time.Millisecond}},
		{"odd", ms2d(3, 1, 2), Stats{N: 3, Mean: 2 * time.Millisecond, StdDev: time.Millisecond, Median: 2 * time.Millisecond, Min: time.Millisecond, Max: 3 * time.Millisecond}},
		{"even median averages", ms2d(1, 2, 3, 10), Stats{N: 4, Mean: 4 * time.Millisecond, StdDev: time.Duration(math.Round(math.Sqrt(50.0/3) * 1e6)), Median: 2500 * time.Microsecond, Min: time.Millisecond, Max: 10 * time.Millisecond}},
		{"constant", ms2d(7, 7, 7), Stats{N: 3, Mean: 7 * time.Millisecond, Median: 7 * time.Millisecond, Min: 7 * time.Millisecond, Max: 7 * time.Millisecond}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := append([]time.Duration(nil), tc.in...)
			if got := ComputeStats(tc.in); got != tc.want {
				t.Errorf("ComputeStats = %+v, want %+v", got, tc.want)
			}
			for i := range in {
				if in[i] != tc.in[i] {
					t.Fatal("ComputeStats reordered its input")
				}
			}
		})
	}
}

func TestComputeFloatStats(t *testing.T) {
	got := ComputeFloatStats([]float64{2, 4, 4, 4, 5, 5, 7, 9})
	if got.N != 8 || got.Mean != 5 || got.Median != 4.5 || got.Min != 2 || got.Max != 9 || math.Abs(got.StdDev-2.138089935) > 1e-6 {
		t.Errorf("ComputeFloatStats = %+v", got)
	}
	if (ComputeFloatStats(nil) != FloatStats{}) {
		t.Error("empty input")
	}
}

func TestRatio(t *testing.T) {
	for _, tc := range []struct {
		name     string
		a, b     Stats
		r, sigma float64
		ok       bool
	}{
		{"exact", Stats{Mean: 10, StdDev: 0}, Stats{Mean: 30, StdDev: 0}, 3, 0, true},
		// hyperfine: σ = r·sqrt((σa/a)² + (σb/b)²) = 2·sqrt(0.01+0.01)
		{"propagated", Stats{Mean: 100, StdDev: 10}, Stats{Mean: 200, StdDev: 20}, 2, 2 * math.Sqrt(0.02), true},
		{"zero mean", Stats{}, Stats{Mean: 5}, 0, 0, false},
	} {
		r, s, ok := Ratio(tc.a, tc.b)
		if ok != tc.ok || math.Abs(r-tc.r) > 1e-12 || math.Abs(s-tc.sigma) > 1e-12 {
			t.Errorf("%s: Ratio = %v ± %v (%v), want %v ± %v (%v)", tc.name, r, s, ok, tc.r, tc.sigma, tc.ok)
		}
	}
}
