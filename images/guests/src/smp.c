/* smp: every vCPU reports its index; vCPU 0 waits for all, then exits 0. */
#include "guest.h"

static volatile u32 console_lock;
static volatile u32 reported;

static void lock(void) {
	while (__atomic_exchange_n(&console_lock, 1, __ATOMIC_ACQUIRE)) __asm__ volatile("pause");
}
static void unlock(void) { __atomic_store_n(&console_lock, 0, __ATOMIC_RELEASE); }

int main(const struct bootinfo *bi, u64 cpu) {
	if (!check_bootinfo(bi)) return 1;
	lock();
	print("smp: vcpu %u of %u reporting\n", cpu, (u64)bi->cpus);
	unlock();
	__atomic_add_fetch(&reported, 1, __ATOMIC_SEQ_CST);
	if (cpu != 0)
		for (;;) __asm__ volatile("cli; hlt");
	while (__atomic_load_n(&reported, __ATOMIC_SEQ_CST) < bi->cpus) __asm__ volatile("pause");
	print("smp: all %u vcpus reported\n", (u64)bi->cpus);
	return 0;
}
