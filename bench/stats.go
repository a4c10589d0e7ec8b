package bench

import (
	"math"
	"sort"
	"time"
)

// Stats summarises one figure (launch→ready or launch→exit) of one path over
// its successful samples.
type Stats struct {
	N      int           `json:"n"`
	Mean   time.Duration `json:"mean_ns"`
	StdDev time.Duration `json:"stddev_ns"` // sample standard deviation (n-1); 0 when N < 2
	Median time.Duration `json:"median_ns"`
	Min    time.Duration `json:"min_ns"`
	Max    time.Duration `json:"max_ns"`
}

// ComputeStats returns the statistics of xs (which it does not modify).
// An empty xs gives the zero Stats.
func ComputeStats(xs []time.Duration) Stats {
	n := len(xs)
	if n == 0 {
		return Stats{}
	}
	s := append([]time.Duration(nil), xs...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	var sum float64
	for _, x := range s {
		sum += float64(x)
	}
	mean := sum / float64(n)
	var ss float64
	for _, x := range s {
		d := float64(x) - mean
		ss += d * d
	}
	sd := 0.0
	if n > 1 {
		sd = math.Sqrt(ss / float64(n-1))
	}
	med := float64(s[n/2])
	if n%2 == 0 {
		med = (float64(s[n/2-1]) + float64(s[n/2])) / 2
	}
	return Stats{
		N: n, Mean: time.Duration(math.Round(mean)), StdDev: time.Duration(math.Round(sd)),
		Median: time.Duration(math.Round(med)), Min: s[0], Max: s[n-1],
	}
}

// FloatStats summarises a float quantity (launches per second).
type FloatStats struct {
	N      int     `json:"n"`
	Mean   float64 `json:"mean"`
	StdDev float64 `json:"stddev"`
	Median float64 `json:"median"`
	Min    float64 `json:"min"`
	Max    float64 `json:"max"`
}

// ComputeFloatStats is ComputeStats for floats.
func ComputeFloatStats(xs []float64) FloatStats {
	n := len(xs)
	if n == 0 {
		return FloatStats{}
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	var sum float64
	for _, x := range s {
		sum += x
	}
	mean := sum / float64(n)
	var ss float64
	for _, x := range s {
		ss += (x - mean) * (x - mean)
	}
	sd := 0.0
	if n > 1 {
		sd = math.Sqrt(ss / float64(n-1))
	}
	med := s[n/2]
	if n%2 == 0 {
		med = (s[n/2-1] + s[n/2]) / 2
	}
	return FloatStats{N: n, Mean: mean, StdDev: sd, Median: med, Min: s[0], Max: s[n-1]}
}

// Ratio is how many times slower b is than a (b.Mean / a.Mean) with its
// uncertainty by first-order error propagation of the two standard
// deviations, as hyperfine computes it:
//
//	r = b/a,  σr = r · sqrt((σa/a)² + (σb/b)²)
//
// ok is false when either mean is zero.
func Ratio(a, b Stats) (r, sigma float64, ok bool) {
	if a.Mean <= 0 || b.Mean <= 0 {
		return 0, 0, false
	}
	ma, mb := float64(a.Mean), float64(b.Mean)
	r = mb / ma
	sigma = r * math.Sqrt(math.Pow(float64(a.StdDev)/ma, 2)+math.Pow(float64(b.StdDev)/mb, 2))
	return r, sigma, true
}
