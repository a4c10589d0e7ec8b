/* guest.h: the little a tiny microvm guest needs (ABI v1, v2 device table). */
#ifndef GUEST_H
#define GUEST_H

typedef unsigned char u8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef unsigned long u64;

#define BOOTINFO_MAGIC 0x31544f4f424d564dUL /* "MVMBOOT1" little-endian */

struct bootinfo {
	u64 magic;
	u32 version;
	u32 cpus;
	u64 mem_size;
	u64 cmdline_addr;
	u32 cmdline_len;
	u32 reserved;
	u64 tsc_khz;
	/* ABI v2 (version >= 2): a table of devices_count entries. */
	u64 devices_addr;
	u32 devices_count;
	u32 reserved2;
};

/* ABI v2 device table entry: a virtio-mmio device. */
struct bootdev {
	u32 type; /* virtio device id: 1 net, 2 blk, 4 rng */
	u32 irq;  /* interrupt GSI (tiny guests have no interrupt controller: poll) */
	u64 mmio_base;
	u64 mmio_size;
};

#define BOOTDEV_NET 1
#define BOOTDEV_BLK 2
#define BOOTDEV_RNG 4

/* 32-bit MMIO register access (one VM exit each, or none with ioeventfd). */
static inline u32 mmio_read32(u64 addr) { return *(volatile u32 *)addr; }
static inline void mmio_write32(u64 addr, u32 v) { *(volatile u32 *)addr = v; }
static inline u8 mmio_read8(u64 addr) { return *(volatile u8 *)addr; }

#define PORT_COM1 0x3f8
#define PORT_EXIT 0x501
#define PORT_READY 0x502

static inline void outb(u16 port, u8 v) { __asm__ volatile("outb %0, %1" : : "a"(v), "Nd"(port)); }
static inline void outl(u16 port, u32 v) { __asm__ volatile("outl %0, %1" : : "a"(v), "Nd"(port)); }

/* A whole string in one instruction: rep outsb (KVM still exits once per byte). */
static inline void outsb(u16 port, const char *s, u64 n) {
	__asm__ volatile("rep outsb" : "+S"(s), "+c"(n) : "d"(port) : "memory");
}

void vm_exit(u32 status) __attribute__((noreturn));
void ready(void);
u64 strlen(const char *s);
void puts(const char *s);
void putn(const char *s, u64 n);
/* fmt appends text to a buffer: %s %u (u64) %x (u64) %c; returns the new end. */
char *fmt(char *p, char *end, const char *f, ...);
void print(const char *f, ...);
int check_bootinfo(const struct bootinfo *bi);

#endif
