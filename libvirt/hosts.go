package libvirt

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"strings"
	"sync"
	"time"
)

// HostResult is the listing of one host: its domains, or why there are none.
type HostResult struct {
	// URI is the connection URI as given (password removed).
	URI     string
	Domains []Domain
	// Err is set when the host could not be listed; the other hosts are
	// unaffected.
	Err error
	// Took is how long connecting and listing took.
	Took time.Duration
}

// ListHosts lists the domains of several daemons at once, one goroutine per
// URI, and returns one result per URI in the order given. A host that cannot
// be reached or listed has Err set; it does not fail the others. Each
// Domain's Host is set to its URI.
func ListHosts(ctx context.Context, uris []string, opts Options, lo ListOptions) []HostResult {
	res := make([]HostResult, len(uris))
	var wg sync.WaitGroup
	for i, uri := range uris {
		wg.Add(1)
		go func() {
			defer wg.Done()
			t0 := time.Now()
			res[i] = listHost(ctx, uri, opts, lo)
			res[i].Took = time.Since(t0)
		}()
	}
	wg.Wait()
	return res
}

func listHost(ctx context.Context, uri string, opts Options, lo ListOptions) HostResult {
	r := HostResult{URI: redact(uri)}
	c, err := Dial(ctx, uri, opts)
	if err != nil {
		r.Err = err
		return r
	}
	defer c.Close()
	ds, err := c.List(ctx, lo)
	if err != nil {
		r.Err = err
		return r
	}
	for i := range ds {
		ds[i].Host = r.URI
	}
	r.Domains = ds
	return r
}

// ParseHostsFile reads a hosts file: one libvirt URI per line; blank lines
// and lines starting with '#' are ignored, as is anything after " #". Every
// URI is checked with ParseURI; errors name the line. Duplicates are an
// error too, since they would list the same host twice.
func ParseHostsFile(data []byte) ([]string, error) {
	var uris []string
	seen := map[string]int{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 4096), 64<<10)
	n := 0
	for sc.Scan() {
		n++
		line := sc.Text()
		if i := strings.Index(line, " #"); i >= 0 {
			line = line[:i]
		}
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if _, err := ParseURI(line); err != nil {
			return nil, fmt.Errorf("hosts file line %d: %w", n, err)
		}
		if prev, ok := seen[line]; ok {
			return nil, fmt.Errorf("hosts file line %d: %s is already on line %d", n, redact(line), prev)
		}
		seen[line] = n
		uris = append(uris, line)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("hosts file line %d: %w", n+1, err)
	}
	return uris, nil
}
