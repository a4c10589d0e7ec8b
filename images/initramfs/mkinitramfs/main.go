// Command mkinitramfs writes the microvm guest initramfs (busybox + /init)
// for `make initramfs`; it is the library behind `microvm image initramfs`
// without the rest of the CLI, so the make target depends on nothing else.
//
//	go run ./images/initramfs/mkinitramfs -o OUT.cpio.gz [-busybox PATH] [-module X.ko]... [-add SRC:DST]...
package main

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/microvm/microvm/images/initramfs"
)

type list []string

func (l *list) String() string     { return strings.Join(*l, ",") }
func (l *list) Set(s string) error { *l = append(*l, s); return nil }

func main() {
	out := flag.String("o", "", "output file (gzip-compressed when it ends in .gz)")
	busybox := flag.String("busybox", initramfs.DefaultBusybox, "statically linked busybox")
	var mods, adds list
	flag.Var(&mods, "module", "kernel module (.ko) to insmod at boot (repeatable, in order)")
	flag.Var(&adds, "add", "SRC:DST extra file or directory (repeatable)")
	flag.Parse()
	if *out == "" || flag.NArg() > 0 {
		fmt.Fprintln(os.Stderr, "usage: mkinitramfs -o OUT [-busybox PATH] [-module X.ko]... [-add SRC:DST]...")
		os.Exit(2)
	}
	opts := initramfs.Options{Busybox: *busybox, Modules: mods, Gzip: strings.HasSuffix(*out, ".gz")}
	for _, a := range adds {
		f, err := initramfs.ParseFile(a)
		if err != nil {
			fmt.Fprintln(os.Stderr, "mkinitramfs:", err)
			os.Exit(2)
		}
		opts.Files = append(opts.Files, f)
	}
	var buf bytes.Buffer
	if err := initramfs.Write(&buf, opts); err != nil {
		fmt.Fprintln(os.Stderr, "mkinitramfs:", err)
		os.Exit(1)
	}
	tmp, err := os.CreateTemp(filepath.Dir(*out), ".initramfs-*")
	if err == nil {
		_, err = tmp.Write(buf.Bytes())
		if cerr := tmp.Close(); err == nil {
			err = cerr
		}
		if err == nil {
			err = os.Chmod(tmp.Name(), 0o644)
		}
		if err == nil {
			err = os.Rename(tmp.Name(), *out)
		}
		if err != nil {
			os.Remove(tmp.Name())
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "mkinitramfs:", err)
		os.Exit(1)
	}
	fmt.Fprintf(os.Stderr, "mkinitramfs: %s (%d bytes)\n", *out, buf.Len())
}
