/* guest.h: the little a tiny microvm guest needs (ABI v1). */
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
};

#define PORT_COM1 0x3f8
#define PORT_EXIT 0x501
#define PORT_READY 0x502

static inline void outb(u16 port, u8 v) { __asm__ volatile("outb %0, %1" : : "a"(v), "Nd"(port)); }
static inline void outl(u16 port, u32 v) { __asm__ volatile("outl %0, %1" : : "a"(v), "Nd"(port)); }

/* One VM exit for a whole string: rep outsb. */
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
