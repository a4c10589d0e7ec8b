package libvirttest

import (
	"fmt"
	"strings"
)

// ParseTable reads a table in virsh's layout (header, dashes, rows; as
// printed by virsh list and microvm libvirt list) back into cells. Columns
// are cut at the offsets where the header's words start, which is exact for
// that layout (every cell is padded to its column's width). Blank lines are
// ignored.
func ParseTable(s string) (header []string, rows [][]string, err error) {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	for len(lines) > 0 && strings.TrimSpace(lines[0]) == "" {
		lines = lines[1:]
	}
	if len(lines) < 2 || strings.Trim(lines[1], "-") != "" {
		return nil, nil, fmt.Errorf("not a virsh table (no header and dashes line): %q", s)
	}
	h := lines[0]
	var starts []int
	for i := 0; i < len(h); i++ {
		if h[i] != ' ' && (i == 0 || h[i-1] == ' ') {
			// A header word starts here unless it continues the previous
			// word after a single space ("CPU time").
			if i >= 2 && h[i-1] == ' ' && h[i-2] != ' ' {
				continue
			}
			starts = append(starts, i)
		}
	}
	cut := func(line string) []string {
		cells := make([]string, len(starts))
		for j, st := range starts {
			end := len(line)
			if j+1 < len(starts) && starts[j+1] < end {
				end = starts[j+1]
			}
			if st < len(line) {
				cells[j] = strings.TrimSpace(line[st:end])
			}
		}
		return cells
	}
	header = cut(h)
	for _, l := range lines[2:] {
		if strings.TrimSpace(l) == "" {
			continue
		}
		rows = append(rows, cut(l))
	}
	return header, rows, nil
}
