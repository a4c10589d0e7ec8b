package libvirt

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// FormatTable lays out a table exactly as virsh's vshTable does: every cell
// is preceded by a space and padded to its column's width plus two (the last
// column is not padded), the header is followed by a line of dashes as long
// as the widths plus three per column. Control characters and invalid UTF-8
// are written as \xNN, as virsh does.
func FormatTable(header []string, rows [][]string) string {
	all := append([][]string{header}, rows...)
	enc := make([][]string, len(all))
	wid := make([][]int, len(all))
	maxw := make([]int, len(header))
	for i, r := range all {
		enc[i] = make([]string, len(header))
		wid[i] = make([]int, len(header))
		for j := range header {
			cell := ""
			if j < len(r) {
				cell = r[j]
			}
			enc[i][j], wid[i][j] = safeEncode(cell)
			if wid[i][j] > maxw[j] {
				maxw[j] = wid[i][j]
			}
		}
	}
	var b strings.Builder
	row := func(i int) {
		for j := range header {
			b.WriteByte(' ')
			b.WriteString(enc[i][j])
			if j < len(header)-1 {
				b.WriteString(strings.Repeat(" ", maxw[j]-wid[i][j]+2))
			}
		}
		b.WriteByte('\n')
	}
	row(0)
	for j := range header {
		b.WriteString(strings.Repeat("-", maxw[j]+3))
	}
	b.WriteByte('\n')
	for i := 1; i < len(all); i++ {
		row(i)
	}
	return b.String()
}

// safeEncode replaces control characters, invalid UTF-8 and a literal "\x"
// by \xNN escapes and returns the display width (in runes).
func safeEncode(s string) (string, int) {
	var b strings.Builder
	w := 0
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size <= 1,
			r < 0x80 && (unicode.IsControl(r) || (r == '\\' && i+1 < len(s) && s[i+1] == 'x')),
			r >= 0x80 && !unicode.IsPrint(r):
			for k := 0; k < size; k++ {
				fmt.Fprintf(&b, "\\x%02x", s[i+k])
				w += 4
			}
		default:
			b.WriteString(s[i : i+size])
			w++
		}
		i += size
	}
	return b.String(), w
}

// ListFormat selects the columns of WriteList.
type ListFormat struct {
	// Long adds vCPUs, Memory and CPU time.
	Long bool
	// Host adds a first Host column (for several hosts).
	Host bool
}

// ListRows returns the header and rows of a listing in virsh's layout
// (" Id   Name   State"), one row per domain, and one row per host that
// failed, with its error in the State column.
func ListRows(results []HostResult, f ListFormat) ([]string, [][]string) {
	header := []string{"Id", "Name", "State"}
	if f.Long {
		header = append(header, "vCPUs", "Memory", "CPU time")
	}
	if f.Host {
		header = append([]string{"Host"}, header...)
	}
	var rows [][]string
	for _, r := range results {
		if r.Err != nil {
			msg := r.Err.Error()
			var e *Error
			if errors.As(r.Err, &e) {
				msg = e.Local()
			}
			row := []string{"-", "-", "error: " + oneLine(msg)}
			if f.Long {
				row = append(row, "-", "-", "-")
			}
			if f.Host {
				row = append([]string{r.URI}, row...)
			}
			rows = append(rows, row)
			continue
		}
		for _, d := range r.Domains {
			row := []string{d.IDString(), d.Name, d.State.String()}
			if f.Long {
				row = append(row, fmt.Sprint(d.VCPUs), FormatKiB(d.MemoryKiB), FormatCPUTime(d.CPUTime))
			}
			if f.Host {
				row = append([]string{r.URI}, row...)
			}
			rows = append(rows, row)
		}
	}
	return header, rows
}

// WriteList writes a listing as virsh list does: the table, then an empty
// line.
func WriteList(w io.Writer, results []HostResult, f ListFormat) error {
	h, rows := ListRows(results, f)
	_, err := io.WriteString(w, FormatTable(h, rows)+"\n")
	return err
}

// FormatKiB prints a memory size given in KiB in the largest binary unit
// that keeps it whole to one decimal ("256 MiB", "1.5 GiB").
func FormatKiB(kib uint64) string {
	switch {
	case kib >= 1<<20:
		return trimZero(fmt.Sprintf("%.1f", float64(kib)/(1<<20))) + " GiB"
	case kib >= 1<<10:
		return trimZero(fmt.Sprintf("%.1f", float64(kib)/(1<<10))) + " MiB"
	}
	return fmt.Sprintf("%d KiB", kib)
}

// FormatCPUTime prints CPU time in seconds with one decimal, as virsh
// dominfo does ("12.3s").
func FormatCPUTime(d time.Duration) string {
	return fmt.Sprintf("%.1fs", d.Seconds())
}

func trimZero(s string) string { return strings.TrimSuffix(s, ".0") }

func oneLine(s string) string {
	s = strings.ReplaceAll(s, "\r", " ")
	return strings.ReplaceAll(s, "\n", " ")
}
