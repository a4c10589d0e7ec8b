package libvirt_test

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/microvm/microvm/libvirt"
	"github.com/microvm/microvm/libvirt/libvirttest"
)

// BenchmarkListHosts measures what `microvm libvirt list --all` does per
// host: dial, open test:///default, list, close; for 1 and 2 hosts listed
// concurrently (a unix-socket daemon and a loopback TCP one); and for one
// host over loopback TLS (ECDSA P-256 certificates) and SSH (Ed25519 keys,
// through a private sshd to the unix socket).
func BenchmarkListHosts(b *testing.B) {
	b.Setenv("SSH_AUTH_SOCK", "")
	local := libvirttest.Start(b, libvirttest.Options{})
	pki := libvirttest.NewPKI(b, b.TempDir())
	remote := libvirttest.Start(b, libvirttest.Options{TCP: true, TLS: pki})
	sshd := libvirttest.StartSSHD(b)
	sshURI := fmt.Sprintf("test+ssh://%s@%s/default?socket=%s&keyfile=%s&known_hosts=%s",
		sshd.User, sshd.Addr, local.Socket, sshd.ClientKey, sshd.KnownHosts)
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		uris []string
	}{
		{"hosts=1-unix", []string{local.URI("test:///default")}},
		{"hosts=1-tcp", []string{remote.TCPURI("test", "/default")}},
		{"hosts=1-tls", []string{remote.TLSURI("test", "/default") + "?pkipath=" + pki.ClientDir}},
		{"hosts=1-ssh", []string{sshURI}},
		{"hosts=2", []string{local.URI("test:///default"), remote.TCPURI("test", "/default")}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			for b.Loop() {
				for _, r := range libvirt.ListHosts(ctx, tc.uris, libvirt.Options{}, libvirt.ListOptions{All: true}) {
					if r.Err != nil {
						b.Fatal(r.Err)
					}
				}
			}
		})
	}
}

// BenchmarkList measures List on an open connection with 1 and 50 domains.
func BenchmarkList(b *testing.B) {
	d := libvirttest.Start(b, libvirttest.Options{})
	ctx := context.Background()
	c, err := libvirt.Dial(ctx, d.URI("test:///default"), libvirt.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	b.Run("domains=1", func(b *testing.B) {
		for b.Loop() {
			if _, err := c.List(ctx, libvirt.ListOptions{All: true}); err != nil {
				b.Fatal(err)
			}
		}
	})
	for i := 0; i < 49; i++ {
		if _, err := c.Define(ctx, testDomainXML(fmt.Sprintf("d%02d", i)), libvirt.DefineOptions{}); err != nil {
			b.Fatal(err)
		}
	}
	b.Run("domains=50", func(b *testing.B) {
		for b.Loop() {
			if _, err := c.List(ctx, libvirt.ListOptions{All: true}); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkBootKernelTCG boots the Debian cloud kernel with the test initrd
// as a transient domain under TCG and reports launch→ready and
// launch→stopped (ms) as metrics: the "full VM" row of microvm bench.
func BenchmarkBootKernelTCG(b *testing.B) {
	libvirttest.HaveQEMU(b)
	kernel := libvirttest.DebianKernel(b)
	d := libvirttest.Start(b, libvirttest.Options{})
	dir := b.TempDir()
	initrd := libvirttest.Initrd(b, dir)
	ctx := context.Background()
	c, err := libvirt.Dial(ctx, d.URI("qemu:///system"), libvirt.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	var ready, exit, start time.Duration
	n := 0
	for b.Loop() {
		res, err := c.BootKernel(ctx, libvirt.BootSpec{
			Kernel: kernel, Initrd: initrd, Cmdline: "quiet", VirtType: libvirt.VirtTCG,
			Transient: true, WaitExit: true, ConsoleLog: filepath.Join(dir, "console.log"),
			Timeout: 2 * time.Minute,
		})
		if err != nil {
			b.Fatal(err)
		}
		ready += res.ReadyAfter
		exit += res.ExitAfter
		start += res.StartTook
		n++
	}
	b.ReportMetric(float64(ready.Milliseconds())/float64(n), "ready-ms")
	b.ReportMetric(float64(exit.Milliseconds())/float64(n), "stopped-ms")
	b.ReportMetric(float64(start.Milliseconds())/float64(n), "createcall-ms")
}
