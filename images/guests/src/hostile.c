/* hostile: misbehaves on purpose, one way per run, chosen by the cmdline
 * (mode=NAME). The VMM must end each run the way the README says, with a
 * clear reason and status, within its timeout.
 *   triple      executes ud2 with no IDT: a triple fault
 *   ports       writes and reads every port no device claims, then unmapped
 *               MMIO; exits 0 if every read returned all ones, else 1
 *   hltif       enables interrupts and halts with nothing to wake it
 *   flood       writes megabytes without a newline (flood=MiB, default 4;
 *               floodk=KiB for a smaller flood where each byte is slow)
 *   range       exits with status 1000, out of the guest range
 *   pagetables  clears its own PML4 and reloads CR3: the next fetch faults
 *   spin2       vCPU 1 spins forever while vCPU 0 exits with status 7 */
#include "guest.h"

static inline u8 inb(u16 port) {
	u8 v;
	__asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port));
	return v;
}

static int has(const char *s, u32 n, const char *word) {
	u64 w = strlen(word);
	for (u32 i = 0; i + w <= n; i++) {
		u64 j = 0;
		while (j < w && s[i + j] == word[j]) j++;
		if (j == w) return 1;
	}
	return 0;
}

static u64 number_after(const char *s, u32 n, const char *word, u64 dflt) {
	u64 w = strlen(word);
	for (u32 i = 0; i + w <= n; i++) {
		u64 j = 0;
		while (j < w && s[i + j] == word[j]) j++;
		if (j < w) continue;
		u64 v = 0;
		for (i += w; i < n && s[i] >= '0' && s[i] <= '9'; i++) v = v * 10 + (u64)(s[i] - '0');
		return v;
	}
	return dflt;
}

/* Ports some device claims, or that would end the run (i8042 reset). */
static int claimed(u32 p) {
	return (p >= 0x3f8 && p <= 0x3ff) || p == PORT_EXIT || p == PORT_READY || (p >= 0x60 && p <= 0x64) ||
	       p == 0x70 || p == 0x71 || p == 0x510 || p == 0x511; /* CMOS/RTC, fw_cfg */
}

static int ports(void) {
	int bad = 0;
	for (u32 p = 0; p < 0x10000; p++) {
		if (claimed(p)) continue;
		outb((u16)p, 0xa5);
		if (inb((u16)p) != 0xff) bad++;
	}
	/* Unmapped MMIO: the hole above RAM and the top of the 4 GiB map. */
	static const u64 mmio[] = {0xe0000000, 0xfec00000, 0xfee00000, 0xf0000000};
	for (u32 i = 0; i < sizeof mmio / sizeof mmio[0]; i++) {
		volatile u32 *r = (volatile u32 *)mmio[i];
		*r = 0x12345678;
		if (*r != 0xffffffff) bad++;
	}
	print("hostile ports: %u reads did not return all ones\n", (u64)bad);
	return bad != 0;
}

static void flood(u64 kib) {
	static char buf[1024];
	for (u32 i = 0; i < sizeof buf; i++) buf[i] = 'x';
	for (u64 k = 0; k < kib; k++) putn(buf, sizeof buf);
}

int main(const struct bootinfo *bi, u64 cpu) {
	if (!check_bootinfo(bi)) return 1;
	const char *s = (const char *)bi->cmdline_addr;
	u32 n = bi->cmdline_len;
	if (has(s, n, "mode=spin2")) {
		if (cpu != 0)
			for (;;) __asm__ volatile("" ::: "memory");
		print("hostile spin2: vcpu 0 exits while vcpu 1 spins\n");
		vm_exit(7);
	}
	if (cpu != 0)
		for (;;) __asm__ volatile("cli; hlt");
	if (has(s, n, "mode=triple")) {
		puts("hostile triple: ud2 with no IDT\n");
		__asm__ volatile("ud2");
	}
	if (has(s, n, "mode=ports")) return ports();
	if (has(s, n, "mode=hltif")) {
		puts("hostile hltif: sti; hlt\n");
		__asm__ volatile("sti; hlt");
		return 3; /* only if something woke it */
	}
	if (has(s, n, "mode=flood")) {
		flood(number_after(s, n, "floodk=", number_after(s, n, "flood=", 4) * 1024));
		return 0;
	}
	if (has(s, n, "mode=range")) vm_exit(1000);
	if (has(s, n, "mode=pagetables")) {
		puts("hostile pagetables: clearing the PML4\n");
		u64 cr3;
		__asm__ volatile("mov %%cr3, %0" : "=r"(cr3));
		volatile u64 *pml4 = (volatile u64 *)(cr3 & ~0xfffUL);
		for (int i = 0; i < 512; i++) pml4[i] = 0;
		__asm__ volatile("mov %0, %%cr3" : : "r"(cr3) : "memory");
		return 4; /* unreachable: the fetch after the reload faults */
	}
	puts("hostile: no mode=... on the cmdline\n");
	return 2;
}
