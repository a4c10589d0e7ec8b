/* hello: greets, prints the boot info it got, exits 0. */
#include "guest.h"

int main(const struct bootinfo *bi, u64 cpu) {
	if (!check_bootinfo(bi)) return 1;
	const char *cmdline = (const char *)bi->cmdline_addr;
	print("Hello from the microvm tiny guest!\n"
	      "boot info: abi v%u, vcpu %u of %u, memory %u MiB, tsc %u kHz\n"
	      "cmdline: \"",
	      (u64)bi->version, cpu, (u64)bi->cpus, bi->mem_size >> 20, bi->tsc_khz);
	putn(cmdline, bi->cmdline_len);
	puts("\"\n");
	return 0;
}
