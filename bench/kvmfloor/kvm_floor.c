// kvm_floor: the floor for starting a tiny KVM guest on this host.
//
// It does the least a VMM can do: open /dev/kvm, create a VM with 2 MiB of RAM,
// one vCPU in 64-bit long mode with an identity map, run a guest that writes the
// microvm "ready" port (0x502), then the "exit" port (0x501) with status 0, and
// tear everything down. It is the yardstick for microvm's own start-up time.
//
// microvm bench copy: identical to shared/bench/kvm_floor.c except that a
// write to the ready port also writes one byte to fd 3 (ignored when fd 3 is
// not open), so the benchmark can see launch->ready of a whole process.
//
//   cc -O2 -o kvm_floor kvm_floor.c
//   ./kvm_floor          one VM, exit status = guest status (0)
//   ./kvm_floor 200      200 VMs in a row in one process; prints the median
//                        per-VM time (create -> ready -> destroyed) in microseconds
#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

static double now_us(void) {
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec * 1e6 + t.tv_nsec / 1e3;
}

static int die(const char *what) {
	perror(what);
	exit(1);
}

// mov dx,0x502; out dx,al; mov dx,0x501; xor eax,eax; out dx,al; hlt
static const unsigned char guest[] = {0x66, 0xba, 0x02, 0x05, 0xee, 0x66, 0xba, 0x01,
				      0x05, 0x31, 0xc0, 0xee, 0xf4};

static int one_vm(int kvm, int mmap_size) {
	int vm = ioctl(kvm, KVM_CREATE_VM, 0);
	if (vm < 0) die("KVM_CREATE_VM");
	size_t size = 2 << 20;
	unsigned char *mem = mmap(0, size, PROT_READ | PROT_WRITE,
				  MAP_SHARED | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (mem == MAP_FAILED) die("mmap");
	struct kvm_userspace_memory_region region = {
	    .slot = 0, .guest_phys_addr = 0, .memory_size = size,
	    .userspace_addr = (uint64_t)(uintptr_t)mem};
	if (ioctl(vm, KVM_SET_USER_MEMORY_REGION, &region) < 0) die("KVM_SET_USER_MEMORY_REGION");
	int vcpu = ioctl(vm, KVM_CREATE_VCPU, 0);
	if (vcpu < 0) die("KVM_CREATE_VCPU");
	struct kvm_run *run = mmap(0, mmap_size, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu, 0);
	if (run == MAP_FAILED) die("mmap kvm_run");

	uint64_t *pml4 = (uint64_t *)(mem + 0x2000), *pdpt = (uint64_t *)(mem + 0x3000),
		 *pd = (uint64_t *)(mem + 0x4000);
	pml4[0] = 0x3000 | 3;
	pdpt[0] = 0x4000 | 3;
	pd[0] = 0x83; // one 2 MiB page
	memcpy(mem + 0x100000 - 0x1000, guest, sizeof guest); // entry at 0xff000

	struct kvm_sregs s;
	if (ioctl(vcpu, KVM_GET_SREGS, &s) < 0) die("KVM_GET_SREGS");
	s.cr3 = 0x2000;
	s.cr4 = 1 << 5;			  // PAE
	s.cr0 = 0x80000001 | (1 << 16);	  // PG | PE | WP
	s.efer = (1 << 8) | (1 << 10);	  // LME | LMA
	struct kvm_segment seg = {.base = 0, .limit = 0xffffffff, .selector = 8, .present = 1,
				  .type = 11, .dpl = 0, .db = 0, .s = 1, .l = 1, .g = 1};
	s.cs = seg;
	seg.type = 3, seg.selector = 16, seg.l = 0, seg.db = 1;
	s.ds = s.es = s.fs = s.gs = s.ss = seg;
	if (ioctl(vcpu, KVM_SET_SREGS, &s) < 0) die("KVM_SET_SREGS");
	struct kvm_regs r = {.rip = 0xff000, .rflags = 2, .rsp = 0x80000};
	if (ioctl(vcpu, KVM_SET_REGS, &r) < 0) die("KVM_SET_REGS");

	int status = -1;
	while (status < 0) {
		if (ioctl(vcpu, KVM_RUN, 0) < 0) {
			if (errno == EINTR) continue;
			die("KVM_RUN");
		}
		if (run->exit_reason == KVM_EXIT_IO && run->io.direction == KVM_EXIT_IO_OUT) {
			unsigned char v = *((unsigned char *)run + run->io.data_offset);
			if (run->io.port == 0x501) status = v;
			if (run->io.port == 0x502) (void)!write(3, "r", 1);
			continue;
		}
		if (run->exit_reason == KVM_EXIT_HLT) status = 0;
		else {
			fprintf(stderr, "unexpected exit %d\n", run->exit_reason);
			exit(1);
		}
	}
	munmap(run, mmap_size);
	close(vcpu);
	munmap(mem, size);
	close(vm);
	return status;
}

static int cmp(const void *a, const void *b) {
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
	int n = argc > 1 ? atoi(argv[1]) : 0;
	int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (kvm < 0) die("open /dev/kvm");
	int mmap_size = ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
	if (mmap_size < 0) die("KVM_GET_VCPU_MMAP_SIZE");
	if (n <= 0) return one_vm(kvm, mmap_size);
	double *t = calloc(n, sizeof *t);
	for (int i = 0; i < n; i++) {
		double t0 = now_us();
		one_vm(kvm, mmap_size);
		t[i] = now_us() - t0;
	}
	qsort(t, n, sizeof *t, cmp);
	printf("kvm_floor: %d VMs, per-VM create->exit->destroy median %.0f us, min %.0f us\n", n,
	       t[n / 2], t[0]);
	return 0;
}
