/* cpuid: dumps what the guest's own CPUID instruction returns for leaves
 * 0, 1, 7.0, 0xd.0, 0xd.1, 0x80000000 and 0x80000001 to COM1, one line
 * each: "cpuid LEAF.SUB eax=X ebx=X ecx=X edx=X" (hex), then "cpuid: done"
 * and exit 0. With "insns" on its cmdline it also executes stmxcsr and
 * ldmxcsr with memory operands, and, when CPUID shows XSAVE, sets
 * CR4.OSXSAVE and runs xgetbv and xsetbv, printing what they gave:
 * "mxcsr before=X loaded=X after=X" and "xcr0 X". */
#include "guest.h"

static void cpuid(u32 leaf, u32 sub, u32 r[4]) {
	__asm__ volatile("cpuid" : "=a"(r[0]), "=b"(r[1]), "=c"(r[2]), "=d"(r[3]) : "a"(leaf), "c"(sub));
}

static void dump(u32 leaf, u32 sub, u32 r[4]) {
	cpuid(leaf, sub, r);
	print("cpuid %x.%x eax=%x ebx=%x ecx=%x edx=%x\n", (u64)leaf, (u64)sub, (u64)r[0], (u64)r[1], (u64)r[2],
	      (u64)r[3]);
}

static int has_word(const struct bootinfo *bi, const char *w) {
	const char *s = (const char *)bi->cmdline_addr;
	u64 n = bi->cmdline_len, k = strlen(w);
	for (u64 i = 0; i + k <= n; i++) {
		u64 j = 0;
		while (j < k && s[i + j] == w[j]) j++;
		if (j == k && (i + k == n || s[i + k] == ' ') && (i == 0 || s[i - 1] == ' ')) return 1;
	}
	return 0;
}

static volatile u32 mxcsr_mem;

static void insns(u32 leaf1_ecx) {
	u32 before, loaded, after;
	__asm__ volatile("stmxcsr %0" : "=m"(mxcsr_mem));
	before = mxcsr_mem;
	mxcsr_mem = before | 0x8000; /* FZ: flush to zero */
	loaded = mxcsr_mem;
	__asm__ volatile("ldmxcsr %0" : : "m"(mxcsr_mem));
	__asm__ volatile("stmxcsr %0" : "=m"(mxcsr_mem));
	after = mxcsr_mem;
	mxcsr_mem = before;
	__asm__ volatile("ldmxcsr %0" : : "m"(mxcsr_mem));
	print("mxcsr before=%x loaded=%x after=%x\n", (u64)before, (u64)loaded, (u64)after);
	if (!(leaf1_ecx & (1u << 26))) {
		puts("xcr0 skipped: no XSAVE in CPUID\n");
		return;
	}
	u64 cr4;
	__asm__ volatile("mov %%cr4, %0" : "=r"(cr4));
	cr4 |= 1ul << 18; /* OSXSAVE */
	__asm__ volatile("mov %0, %%cr4" : : "r"(cr4));
	u32 lo, hi;
	__asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
	__asm__ volatile("xsetbv" : : "a"(lo), "d"(hi), "c"(0));
	print("xcr0 %x\n", (u64)hi << 32 | lo);
}

int main(const struct bootinfo *bi, u64 cpu) {
	(void)cpu;
	if (!check_bootinfo(bi)) return 1;
	u32 r[4], l1[4];
	dump(0, 0, r);
	u32 max = r[0];
	dump(1, 0, l1);
	if (max >= 7) dump(7, 0, r);
	if (max >= 0xd) {
		dump(0xd, 0, r);
		dump(0xd, 1, r);
	}
	dump(0x80000000, 0, r);
	if (r[0] >= 0x80000001) dump(0x80000001, 0, r);
	if (has_word(bi, "insns")) insns(l1[2]);
	puts("cpuid: done\n");
	return 0;
}
