#include <stdarg.h>
#include "guest.h"

void vm_exit(u32 status) {
	outl(PORT_EXIT, status);
	for (;;) __asm__ volatile("cli; hlt");
}

void ready(void) { outb(PORT_READY, 1); }

u64 strlen(const char *s) {
	u64 n = 0;
	while (s[n]) n++;
	return n;
}

void putn(const char *s, u64 n) { outsb(PORT_COM1, s, n); }
void puts(const char *s) { putn(s, strlen(s)); }

static char *num(char *p, char *end, u64 v, unsigned base) {
	char tmp[20];
	int n = 0;
	do {
		tmp[n++] = "0123456789abcdef"[v % base];
		v /= base;
	} while (v);
	while (n && p < end) *p++ = tmp[--n];
	return p;
}

static char *vfmt(char *p, char *end, const char *f, va_list ap) {
	for (; *f && p < end; f++) {
		if (*f != '%') {
			*p++ = *f;
			continue;
		}
		switch (*++f) {
		case 's':
			for (const char *s = va_arg(ap, const char *); *s && p < end; s++) *p++ = *s;
			break;
		case 'u': p = num(p, end, va_arg(ap, u64), 10); break;
		case 'x': p = num(p, end, va_arg(ap, u64), 16); break;
		case 'c': *p++ = (char)va_arg(ap, int); break;
		case 0: return p;
		default: *p++ = *f;
		}
	}
	return p;
}

char *fmt(char *p, char *end, const char *f, ...) {
	va_list ap;
	va_start(ap, f);
	p = vfmt(p, end, f, ap);
	va_end(ap);
	return p;
}

void print(const char *f, ...) {
	char buf[512];
	va_list ap;
	va_start(ap, f);
	char *p = vfmt(buf, buf + sizeof buf, f, ap);
	va_end(ap);
	putn(buf, p - buf);
}

int check_bootinfo(const struct bootinfo *bi) {
	if (bi->magic != BOOTINFO_MAGIC || bi->version < 1) {
		print("bad boot info at %x: magic %x version %u\n", (u64)bi, bi->magic, (u64)bi->version);
		return 0;
	}
	return 1;
}
