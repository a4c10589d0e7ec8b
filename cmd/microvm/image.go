package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/microvm/microvm/images/initramfs"
	"github.com/microvm/microvm/images/linux"
	"github.com/spf13/cobra"
)

func (a *app) newImageCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "image",
		Short: "Build and inspect guest images (initramfs, Linux kernels)",
		Long: `image builds the guest initramfs and inspects Linux kernel images: the
things that 'microvm boot --kernel' takes.`,
		Example: `  microvm image initramfs -o initramfs.cpio.gz
  microvm image kernel .cache/debian-kernel/vmlinuz --json`,
		Args: noArgs,
	}
	cmd.AddCommand(a.newImageInitramfsCmd(), a.newImageKernelCmd())
	return cmd
}

// initramfsReport is the --json output of `image initramfs`.
type initramfsReport struct {
	Output  string   `json:"output"`
	Bytes   int      `json:"bytes"`
	SHA256  string   `json:"sha256"`
	Gzip    bool     `json:"gzip"`
	Busybox string   `json:"busybox"`
	Modules []string `json:"modules,omitempty"`
	Files   []string `json:"files,omitempty"`
}

func (a *app) newImageInitramfsCmd() *cobra.Command {
	var (
		out, busybox, moduleDir string
		adds, modules           []string
		gz, noGzip, asJSON      bool
	)
	cmd := &cobra.Command{
		Use:   "initramfs -o OUT",
		Short: "Write the microvm guest initramfs (busybox + /init)",
		Long: `initramfs writes a small initramfs (cpio "newc", deterministic) holding a
statically linked busybox and an /init that mounts devtmpfs, proc and sysfs,
insmods the given kernel modules, prints "` + initramfs.ReadyMarker + `", writes the
microvm ready register, runs the command given on the kernel command line as
microvm.cmd="..." (or a shell on the console), writes the command's exit
status to the microvm exit register and powers off. The registers are
ports 0x501 (exit) and 0x502 (ready) through /dev/port when the kernel has
it, else the MMIO page 0xc0000000 (+0 exit, +2 ready) through /dev/mem.

The output is gzip-compressed when it ends in .gz (or with --gzip).
--module takes a .ko path, or a module name that is looked up, with its
dependencies, under --module-dir (a /lib/modules/<release> tree).`,
		Example: `  microvm image initramfs -o initramfs.cpio.gz
  microvm image initramfs -o rd.gz --add ./tool:/usr/bin/tool --add ./data:/srv/data
  microvm image initramfs -o rd.gz --module-dir .cache/debian-kernel/modules \
      --module virtio_blk --module virtio_net --json`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if out == "" {
				return usageErrorf("image initramfs: -o OUT is required")
			}
			opts := initramfs.Options{Busybox: busybox, Gzip: (gz || strings.HasSuffix(out, ".gz")) && !noGzip}
			for _, s := range adds {
				f, err := initramfs.ParseFile(s)
				if err != nil {
					return usageErrorf("--add %v", err)
				}
				opts.Files = append(opts.Files, f)
			}
			for _, m := range modules {
				if strings.HasSuffix(m, ".ko") || strings.ContainsRune(m, '/') {
					opts.Modules = appendNew(opts.Modules, m)
					continue
				}
				if moduleDir == "" {
					return usageErrorf("--module %s: a module name needs --module-dir (or give the .ko path)", m)
				}
				paths, err := initramfs.ResolveModules(moduleDir, m)
				if err != nil {
					return withCode(exitBadImage, err)
				}
				for _, p := range paths {
					opts.Modules = appendNew(opts.Modules, p)
				}
			}
			var buf bytes.Buffer
			if err := initramfs.Write(&buf, opts); err != nil {
				return withCode(exitBadImage, fmt.Errorf("image initramfs: %w", err))
			}
			if err := writeFileAtomic(out, buf.Bytes()); err != nil {
				return fmt.Errorf("image initramfs: %w", err)
			}
			sum := sha256.Sum256(buf.Bytes())
			rep := initramfsReport{
				Output: out, Bytes: buf.Len(), SHA256: hex.EncodeToString(sum[:]), Gzip: opts.Gzip,
				Busybox: busybox, Modules: opts.Modules,
			}
			if rep.Busybox == "" {
				rep.Busybox = initramfs.DefaultBusybox
			}
			for _, f := range opts.Files {
				rep.Files = append(rep.Files, f.Src+":"+f.Dst)
			}
			if asJSON {
				enc := json.NewEncoder(a.stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(rep)
			}
			fmt.Fprintf(a.stderr, "microvm: wrote %s (%d bytes, %d modules, %d extra paths)\n", out, buf.Len(), len(opts.Modules), len(opts.Files))
			return nil
		},
	}
	fl := cmd.Flags()
	fl.StringVarP(&out, "output", "o", "", "output file (required)")
	fl.StringVar(&busybox, "busybox", initramfs.DefaultBusybox, "statically linked busybox to include")
	fl.StringArrayVar(&adds, "add", nil, "SRC:DST: add a host file or directory at DST (repeatable)")
	fl.StringArrayVar(&modules, "module", nil, "kernel module to insmod at boot: a .ko path, or a name resolved under --module-dir (repeatable, in order)")
	fl.StringVar(&moduleDir, "module-dir", "", "a /lib/modules/<release> tree to resolve --module names and their dependencies in")
	fl.BoolVar(&gz, "gzip", false, "gzip the archive even if OUT does not end in .gz")
	fl.BoolVar(&noGzip, "no-gzip", false, "do not compress, whatever OUT is called")
	fl.BoolVar(&asJSON, "json", false, "print what was written as JSON on stdout")
	markPaths(fl, "output", "busybox", "add", "module", "module-dir")
	return cmd
}

// kernelReport is the --json output of `image kernel`.
type kernelReport struct {
	Path          string                `json:"path"`
	Format        string                `json:"format"`
	Protocol      string                `json:"protocol,omitempty"`
	Version       string                `json:"version,omitempty"`
	CmdlineSize   uint32                `json:"cmdline_size,omitempty"`
	InitSize      uint32                `json:"init_size,omitempty"`
	Relocatable   bool                  `json:"relocatable,omitempty"`
	Entry         uint64                `json:"entry"`
	KernelStart   uint64                `json:"kernel_start"`
	KernelEnd     uint64                `json:"kernel_end"`
	PVHEntry      uint64                `json:"pvh_entry,omitempty"`
	Segments      int                   `json:"segments"`
	Decompress    *linux.DecompressInfo `json:"decompress"`
	DecompressMs  float64               `json:"decompress_ms"`
	PayloadFormat string                `json:"payload_compression,omitempty"`
}

func (a *app) newImageKernelCmd() *cobra.Command {
	var (
		asJSON   bool
		cacheDir string
	)
	cmd := &cobra.Command{
		Use:   "kernel PATH",
		Short: "Inspect a Linux kernel image: format, boot protocol, payload, entry point",
		Long: `kernel parses a bzImage or vmlinux as 'microvm boot' would, decompresses a
bzImage's payload on the host (gzip, bzip2, lzma, xz, lz4 or zstd), and reports
the setup header, the 64-bit entry point, where the kernel would sit in guest
memory and how long decompression took. With --cache-dir the decompressed
vmlinux is cached there under the image's SHA-256 (a second run reads it back).`,
		Example: `  microvm image kernel .cache/kernel/bzImage
  microvm image kernel .cache/debian-kernel/vmlinuz --json
  microvm image kernel vmlinuz --cache-dir ~/.cache/microvm/kernels`,
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			path := args[0]
			data, err := os.ReadFile(path)
			if err != nil {
				return withCode(exitBadImage, fmt.Errorf("read kernel: %w", err))
			}
			k, err := linux.Parse(data)
			if err != nil {
				return withCode(exitBadImage, fmt.Errorf("kernel %q: %w", path, err))
			}
			vmlinux, info, err := linux.Decompress(context.Background(), k, cacheDir)
			if err != nil {
				return withCode(exitBadImage, fmt.Errorf("kernel %q: %w", path, err))
			}
			ei, err := linux.ParseELF(vmlinux)
			if err != nil {
				return withCode(exitBadImage, fmt.Errorf("kernel %q: %w", path, err))
			}
			rep := kernelReport{
				Path: path, Format: k.Format.String(), Entry: ei.Entry, KernelStart: ei.Start, KernelEnd: ei.End,
				PVHEntry: ei.PVHEntry, Segments: len(ei.Segments), Decompress: info,
				DecompressMs: float64(info.Duration.Microseconds()) / 1000,
			}
			if h := k.Header; h != nil {
				rep.Protocol, rep.Version = h.ProtocolString(), h.KernelVersion
				rep.CmdlineSize, rep.InitSize, rep.Relocatable = h.CmdlineSize, h.InitSize, h.Relocatable
				rep.PayloadFormat = k.Compression.String()
			}
			if asJSON {
				enc := json.NewEncoder(a.stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(rep)
			}
			w := a.stdout
			fmt.Fprintf(w, "%s: %s\n", path, rep.Format)
			if rep.Protocol != "" {
				fmt.Fprintf(w, "  boot protocol  %s, cmdline_size %d, init_size %#x\n", rep.Protocol, rep.CmdlineSize, rep.InitSize)
				fmt.Fprintf(w, "  version        %s\n", rep.Version)
				cached := ""
				if info.Cached {
					cached = " (from cache)"
				}
				fmt.Fprintf(w, "  payload        %s, %d → %d bytes in %.1f ms%s\n", rep.PayloadFormat, info.CompressedSize, info.Size, rep.DecompressMs, cached)
			}
			fmt.Fprintf(w, "  64-bit entry   %#x\n", rep.Entry)
			fmt.Fprintf(w, "  kernel memory  [%#x, %#x), %d segments\n", rep.KernelStart, rep.KernelEnd, rep.Segments)
			if rep.PVHEntry != 0 {
				fmt.Fprintf(w, "  PVH entry      %#x\n", rep.PVHEntry)
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the report as JSON on stdout")
	cmd.Flags().StringVar(&cacheDir, "cache-dir", "", "cache decompressed kernels here, keyed by image SHA-256")
	markPaths(cmd.Flags(), "cache-dir")
	return cmd
}

func appendNew(list []string, s string) []string {
	for _, x := range list {
		if x == s {
			return list
		}
	}
	return append(list, s)
}

// writeFileAtomic writes data to path through a temporary file and rename.
func writeFileAtomic(path string, data []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+"-*")
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(f.Name(), 0o644)
	}
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err != nil {
		os.Remove(f.Name())
	}
	return err
}
