// Package guests embeds the prebuilt tiny guests (ABI v1) that microvm can
// boot by name. Their sources are in src/; build.sh rebuilds them (`make
// images`), and a test checks that the committed blobs match the sources.
package guests

import (
	"embed"
	"fmt"
	"io/fs"
	"sort"
	"strings"
)

//go:embed bin/*.elf
var blobs embed.FS

// Default is the guest `microvm boot` runs when given no image.
const Default = "hello"

// descriptions says what each embedded guest does.
var descriptions = map[string]string{
	"hello":   "prints a greeting and the boot info it got (cpus, memory, cmdline); exits 0",
	"ready":   "writes the ready port, then exits 0: the benchmark guest (two VM exits)",
	"exit":    "exits with the status named on its cmdline (the first number in it); with hold: writes ready, then idles (with --irqchip) until stopped",
	"smp":     "every vCPU reports its index; vCPU 0 waits for all, then exits 0",
	"hostile": "misbehaves on purpose, as its cmdline says (mode=triple|ports|hltif|flood|range|pagetables|spin2)",
	"cpuid":   "dumps its own CPUID (leaves 0, 1, 7.0, 0xd.0/1, 0x80000000/1) to COM1; with insns also stmxcsr/ldmxcsr/xgetbv/xsetbv; exits 0",
	"virtio":  "drives the virtio devices in its boot info (ABI v2): disk read/write, entropy, a frame over the network; bench=N does N random 4 KiB disk reads",
}

// Get returns the ELF image of the named guest.
func Get(name string) ([]byte, error) {
	b, err := blobs.ReadFile("bin/" + name + ".elf")
	if err != nil {
		return nil, fmt.Errorf("no embedded guest %q (have: %s)", name, strings.Join(Names(), ", "))
	}
	return b, nil
}

// Names lists the embedded guests, sorted.
func Names() []string {
	var names []string
	entries, _ := fs.ReadDir(blobs, "bin")
	for _, e := range entries {
		names = append(names, strings.TrimSuffix(e.Name(), ".elf"))
	}
	sort.Strings(names)
	return names
}

// Describe says what the named guest does.
func Describe(name string) string { return descriptions[name] }
