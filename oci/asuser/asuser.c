/* asuser: the microvm oci agent's way to run the workload as process.user.
 *
 *   asuser UID GID GROUPS PROG [ARG...]
 *
 * sets the supplementary groups (GROUPS: comma-separated gids, or "-" for
 * none), then the gid, then the uid, and execs PROG (an absolute path: no
 * PATH search) with the environment it was given. Busybox's setpriv,
 * start-stop-daemon and su either lack these options or want names from
 * /etc/passwd, which is the container's own file. Freestanding (raw system
 * calls, no libc): ~1 KiB. Build: make -C oci/asuser (the binary is
 * committed and embedded by oci/guest.go). On error it says why on stderr
 * and exits 126 (cannot switch) or 127 (cannot exec), as shells do. */

typedef unsigned int u32;

static long sys3(long n, long a, long b, long c) {
	long r;
	__asm__ volatile("syscall" : "=a"(r) : "a"(n), "D"(a), "S"(b), "d"(c) : "rcx", "r11", "memory");
	return r;
}

enum { SYS_write = 1, SYS_execve = 59, SYS_exit = 60, SYS_setuid = 105, SYS_setgid = 106, SYS_setgroups = 116 };

static unsigned long len(const char *s) {
	unsigned long n = 0;
	while (s[n]) n++;
	return n;
}

static void say(const char *s) { sys3(SYS_write, 2, (long)s, (long)len(s)); }

static void die(const char *what, const char *arg, int status) {
	say("asuser: ");
	say(what);
	if (arg) {
		say(" ");
		say(arg);
	}
	say("\n");
	sys3(SYS_exit, status, 0, 0);
	for (;;) {}
}

/* num parses a decimal u32 from s up to end (exclusive) or NUL. */
static int num(const char *s, const char *end, u32 *v) {
	unsigned long x = 0;
	if (s == end || !*s) return 0;
	for (; s != end && *s; s++) {
		if (*s < '0' || *s > '9') return 0;
		x = x * 10 + (unsigned long)(*s - '0');
		if (x > 0xffffffffUL) return 0;
	}
	*v = (u32)x;
	return 1;
}

#define MAXGROUPS 64

void start_c(long *sp) {
	long argc = sp[0];
	char **argv = (char **)(sp + 1);
	char **envp = argv + argc + 1;
	u32 uid, gid, groups[MAXGROUPS];
	long n = 0;
	if (argc < 5) die("usage: asuser UID GID GROUPS PROG [ARG...]", 0, 126);
	if (!num(argv[1], 0, &uid)) die("bad uid", argv[1], 126);
	if (!num(argv[2], 0, &gid)) die("bad gid", argv[2], 126);
	if (!(argv[3][0] == '-' && argv[3][1] == 0)) {
		const char *p = argv[3];
		for (;;) {
			const char *q = p;
			while (*q && *q != ',') q++;
			if (n == MAXGROUPS || !num(p, q, &groups[n])) die("bad groups", argv[3], 126);
			n++;
			if (!*q) break;
			p = q + 1;
		}
	}
	if (sys3(SYS_setgroups, n, (long)groups, 0) < 0) die("setgroups failed for", argv[3], 126);
	if (sys3(SYS_setgid, gid, 0, 0) < 0) die("setgid failed for", argv[2], 126);
	if (sys3(SYS_setuid, uid, 0, 0) < 0) die("setuid failed for", argv[1], 126);
	sys3(SYS_execve, (long)argv[4], (long)(argv + 4), (long)envp);
	die("cannot exec", argv[4], 127);
}

__asm__(".globl _start\n"
	"_start:\n"
	"\tmov %rsp, %rdi\n"
	"\tand $-16, %rsp\n"
	"\tcall start_c\n"
	"\thlt\n");
