// Package rig is the real-KVM test rig: it runs commands inside an L1 Linux
// guest that has a real, SVM-backed /dev/kvm, on hosts that have none.
//
// The development and CI hosts expose /dev/kvm only through kvm_pvm, where
// unmodified guest code is emulated and Linux user space cannot run. QEMU's
// TCG emulates AMD-V, though: Run boots Debian's cloud kernel under
// `qemu-system-x86_64 -M q35 -accel tcg -cpu EPYC,+svm,+npt`, with an
// initramfs whose init (init.sh) loads irqbypass.ko, kvm.ko and kvm-amd.ko
// from the same kernel package. Inside that L1 guest, microvm, kvm_floor or
// QEMU itself run on real KVM semantics (nested under TCG, so absolute
// timings are emulation figures, not hardware ones).
//
// # The initramfs
//
// The L1 initramfs is two concatenated cpio archives (the kernel unpacks
// them in order): a base archive with busybox, init and the KVM modules,
// built by images/initramfs and cached in <CacheDir>/base-<hash>.cpio, and a
// per-run archive with Config.Files, the command scripts and the run's
// nonce. A run costs the QEMU boot (about 2.5 s to the first command on the
// development host) plus the commands.
//
// # The results protocol
//
// Kernel messages go to the console on ttyS0, which Run writes to
// Result.Console. Results use a second UART, ttyS1, which nothing else
// writes to and which QEMU connects to Run's pipe; each event line starts
// with "RIG:<nonce> ", a random per-run nonce, so neither kernel messages
// nor command output can be mistaken for an event. Per command, L1 writes
// BEGIN, one O line per output line (live), and END with the exit status;
// after the last command DONE, then it powers off. Each command runs with
// busybox `sh -e` in its own session; when it ends (or its Timeout passes)
// the whole session is killed, so nothing it left behind can hold up the
// run. A host-side Timeout (and ctx) kills QEMU; QEMU also dies with the
// process that started it (PDEATHSIG).
//
// # Example
//
// A test that runs the static microvm binary inside L1:
//
//	func TestRigMicrovmCheck(t *testing.T) {
//		cfg, a := rig.Require(t) // skips loudly without QEMU or the L1 kernel
//		if a.Microvm == "" {
//			t.Skip("SKIP: MICROVM_BIN unset (make test sets it)")
//		}
//		cfg.Files = map[string]string{
//			"/bin/microvm":     a.Microvm,        // CGO_ENABLED=0: static
//			"/guest/vmlinux":   a.GuestVmlinux,   // lean kernel (make kernel)
//			"/guest/initramfs": a.GuestInitramfs, // busybox guest initramfs
//		}
//		cfg.Commands = []rig.Command{
//			{Name: "check", Run: "microvm check"},
//			{Name: "boot", Run: "microvm boot --initrd /guest/initramfs /guest/vmlinux",
//				Timeout: time.Minute},
//		}
//		res := rig.RunTest(t, cfg) // fails t on a rig error, keeps logs on failure
//		for _, c := range res.Commands {
//			if !c.OK() {
//				t.Errorf("%s: status %d\n%s", c.Name, c.Status, c.Output)
//			}
//		}
//	}
//
// Outside tests, Run(ctx, cfg) returns the same Result; AddBinary copies a
// dynamically linked program with its libraries, AddQEMU the host's QEMU
// with the firmware -M microvm needs. The rigrun command
// (go run ./internal/rig/rigrun 'cmd' ...) runs commands by hand.
package rig
