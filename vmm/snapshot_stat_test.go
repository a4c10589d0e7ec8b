package vmm

import (
	"os"
	"syscall"
)

// statBlocks returns the 512-byte blocks a file occupies, or -1.
func statBlocks(fi os.FileInfo) int64 {
	if s, ok := fi.Sys().(*syscall.Stat_t); ok {
		return s.Blocks
	}
	return -1
}
