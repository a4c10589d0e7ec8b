// Package libvirt manages full VMs through libvirtd, on one host or many,
// with github.com/digitalocean/go-libvirt (a pure-Go client of libvirt's RPC
// protocol: no cgo, no libvirt.so).
//
// Connect by URI as virsh does (qemu:///system, test:///default,
// qemu+tcp://host/system, qemu+tls://host/system, qemu+ssh://user@host/system;
// ?socket=/path picks a unix socket), list domains in virsh's order and
// words, drive their lifecycle, and boot a kernel image as a domain by
// direct kernel boot while timing launch→ready from its console:
//
//	c, err := libvirt.Dial(ctx, "qemu:///system", libvirt.Options{})
//	if err != nil { ... }
//	defer c.Close()
//	doms, err := c.List(ctx, libvirt.ListOptions{All: true})
//	res, err := c.BootKernel(ctx, libvirt.BootSpec{
//		Kernel: "/boot/vmlinuz", Initrd: "/tmp/initrd.cpio",
//		Transient: true, WaitExit: true,
//	})
//	defer res.Cleanup(ctx)
//	fmt.Println(res.ReadyAfter, res.ExitAfter)
//
// Nothing here waits forever: dialing and the handshake are bounded by
// Options.ConnectTimeout, every call by Options.CallTimeout (and the
// context); a call that runs out of time closes the connection, and a daemon
// that goes away fails the calls in flight with ErrConnectionLost.
// Every error is an *Error; libvirtd's own text is kept, and ErrorCode gives
// its error number.
//
// ListHosts lists many daemons concurrently; a host that fails is a result
// with its error, not a failure of the whole listing. FormatTable and
// WriteList print virsh's table layout.
package libvirt
