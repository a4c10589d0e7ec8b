/* exit: exits with the status named on its cmdline (the first decimal
 * number in it, e.g. "42" or "status=42"); 0 when there is none.
 * With "hold" on the cmdline it writes the ready port and halts with
 * interrupts on instead: with the in-kernel irqchip (--irqchip) the vCPU
 * then sleeps in KVM and the VM stays up, idle, until it is stopped (the
 * instance that `microvm bench --density` holds). */
#include "guest.h"

int main(const struct bootinfo *bi, u64 cpu) {
	(void)cpu;
	if (!check_bootinfo(bi)) return 1;
	const char *s = (const char *)bi->cmdline_addr;
	u32 n = bi->cmdline_len, i = 0;
	for (u32 j = 0; j + 4 <= n; j++) {
		if (s[j] == 'h' && s[j + 1] == 'o' && s[j + 2] == 'l' && s[j + 3] == 'd') {
			print("exit: holding\n");
			ready();
			for (;;) __asm__ volatile("sti; hlt");
		}
	}
	while (i < n && (s[i] < '0' || s[i] > '9')) i++;
	u64 status = 0;
	for (; i < n && s[i] >= '0' && s[i] <= '9'; i++) status = status * 10 + (u64)(s[i] - '0');
	print("exit: status %u\n", status);
	vm_exit((u32)status);
}
