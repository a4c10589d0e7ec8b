/* virtio: a lean virtio-mmio driver for tiny guests (ABI v2). It walks the
 * boot info's device table and tests each device, polling used rings (a
 * tiny guest has no interrupt controller):
 *   blk  reads sector 0 and prints its FNV-1a checksum, prints the id
 *        (GET_ID), writes the pattern byte[i] = i*7+1 to sector 1, flushes
 *        and reads it back (a read-only disk must refuse the write);
 *   rng  reads 16 bytes and prints them;
 *   net  sends a broadcast frame (ethertype 0x88b5) and waits, at most 10 s,
 *        for a frame of that type to come back; prints its payload.
 * Each device is reset once tested. Exit status: 0 when every device
 * passed, else the first failure:
 *   2 boot info older than v2       3 no devices
 *   10 blk init   11 read sector 0  12 GET_ID   13 write sector 1
 *   14 read-back differs            15 flush
 *   20 rng init   21 rng read
 *   30 net init   31 transmit       32 no frame received
 *   40 bench: no usable disk        41 bench: a read failed
 *   50 hostile: no disk   51 a broken queue did not set NEEDS_RESET
 *   52 the disk did not work again after a reset
 * With "bench=N" on the cmdline it instead does N random 4 KiB reads from
 * the first disk between a ready write and its exit: the VMM's ready→exit
 * time over N is the request rate. With "hostile" it breaks the first
 * disk's queue three ways (a descriptor loop, a buffer outside RAM, a queue
 * size that is not a power of 2), expecting DEVICE_NEEDS_RESET each time
 * and a working disk after each reset. Every instruction is emulated on some
 * hosts (~0.6 us each): keep the loops short. */
#include "guest.h"

/* virtio-mmio registers and status bits (virtio 1.2, 4.2.2). */
#define VIRTIO_MAGIC 0x74726976
#define R_MAGIC 0x000
#define R_VERSION 0x004
#define R_DEV_FEAT 0x010
#define R_DEV_FEAT_SEL 0x014
#define R_DRV_FEAT 0x020
#define R_DRV_FEAT_SEL 0x024
#define R_QUEUE_SEL 0x030
#define R_QUEUE_NUM_MAX 0x034
#define R_QUEUE_NUM 0x038
#define R_QUEUE_READY 0x044
#define R_QUEUE_NOTIFY 0x050
#define R_STATUS 0x070
#define R_QUEUE_DESC 0x080
#define R_QUEUE_DRIVER 0x090
#define R_QUEUE_DEVICE 0x0a0
#define R_CONFIG 0x100
#define S_ACK 1
#define S_DRIVER 2
#define S_DRIVER_OK 4
#define S_FEATURES_OK 8

#define BLK_F_RO (1u << 5)
#define BLK_F_FLUSH (1u << 9)
#define BLK_T_IN 0
#define BLK_T_OUT 1
#define BLK_T_FLUSH 4
#define BLK_T_GET_ID 8
#define NET_F_MAC (1u << 5)
#define NET_HDR 12
#define ETHERTYPE_HI 0x88
#define ETHERTYPE_LO 0xb5

#define QSZ 8
#define D_NEXT 1
#define D_WRITE 2

struct desc {
	u64 addr;
	u32 len;
	u16 flags, next;
};

/* One split virtqueue with its rings. */
struct vq {
	struct desc desc[QSZ];
	struct {
		u16 flags, idx, ring[QSZ], event;
	} avail;
	struct {
		u16 flags, idx;
		struct {
			u32 id, len;
		} ring[QSZ];
		u16 event;
	} used __attribute__((aligned(4)));
	u64 base;
	u16 last_used, qi;
} __attribute__((aligned(16)));

static struct vq vqs[2];
static u64 tsc_per_10s;

static inline u64 rdtsc(void) {
	u32 lo, hi;
	__asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
	return (u64)hi << 32 | lo;
}

static inline void reg_w(u64 base, u32 off, u32 v) { mmio_write32(base + off, v); }
static inline u32 reg_r(u64 base, u32 off) { return mmio_read32(base + off); }
#define barrier() __asm__ volatile("" ::: "memory")

/* dev_init resets the device at base, accepts VERSION_1 and the wanted
 * low feature bits the device offers, sets up nq queues and starts it.
 * Returns the accepted low feature bits, or -1. */
static long dev_init(u64 base, u32 wanted, u32 nq) {
	if (reg_r(base, R_MAGIC) != VIRTIO_MAGIC || reg_r(base, R_VERSION) != 2) return -1;
	reg_w(base, R_STATUS, 0);
	reg_w(base, R_STATUS, S_ACK | S_DRIVER);
	reg_w(base, R_DEV_FEAT_SEL, 1);
	if (!(reg_r(base, R_DEV_FEAT) & 1)) return -1; /* VERSION_1 */
	reg_w(base, R_DEV_FEAT_SEL, 0);
	u32 f = reg_r(base, R_DEV_FEAT) & wanted;
	reg_w(base, R_DRV_FEAT_SEL, 0);
	reg_w(base, R_DRV_FEAT, f);
	reg_w(base, R_DRV_FEAT_SEL, 1);
	reg_w(base, R_DRV_FEAT, 1);
	reg_w(base, R_STATUS, S_ACK | S_DRIVER | S_FEATURES_OK);
	if (!(reg_r(base, R_STATUS) & S_FEATURES_OK)) return -1;
	for (u32 i = 0; i < nq; i++) {
		struct vq *q = &vqs[i];
		q->avail.flags = q->avail.idx = q->used.idx = q->last_used = 0;
		q->base = base;
		q->qi = i;
		reg_w(base, R_QUEUE_SEL, i);
		if (reg_r(base, R_QUEUE_NUM_MAX) < QSZ) return -1;
		reg_w(base, R_QUEUE_NUM, QSZ);
		reg_w(base, R_QUEUE_DESC, (u32)(u64)q->desc);
		reg_w(base, R_QUEUE_DESC + 4, (u32)((u64)q->desc >> 32));
		reg_w(base, R_QUEUE_DRIVER, (u32)(u64)&q->avail);
		reg_w(base, R_QUEUE_DRIVER + 4, (u32)((u64)&q->avail >> 32));
		reg_w(base, R_QUEUE_DEVICE, (u32)(u64)&q->used);
		reg_w(base, R_QUEUE_DEVICE + 4, (u32)((u64)&q->used >> 32));
		reg_w(base, R_QUEUE_READY, 1);
	}
	reg_w(base, R_STATUS, S_ACK | S_DRIVER | S_FEATURES_OK | S_DRIVER_OK);
	return f;
}

/* vq_kick offers the chain at head and notifies the device. */
static void vq_kick(struct vq *q, u16 head) {
	q->avail.ring[q->avail.idx % QSZ] = head;
	barrier(); /* the entry before the index: x86 keeps stores in order */
	q->avail.idx++;
	barrier();
	reg_w(q->base, R_QUEUE_NOTIFY, q->qi);
}

/* vq_wait waits (at most 10 s) for the device to return a chain; returns
 * its head, its used length in *len, or -1 on timeout. */
static int vq_wait(struct vq *q, u32 *len) {
	u64 deadline = rdtsc() + tsc_per_10s;
	u32 spins = 0;
	while (*(volatile u16 *)&q->used.idx == q->last_used)
		if ((++spins & 0xfff) == 0 && rdtsc() > deadline) return -1;
	barrier();
	u16 slot = q->last_used++ % QSZ;
	if (len) *len = q->used.ring[slot].len;
	return (int)q->used.ring[slot].id;
}

static struct {
	u32 type, reserved;
	u64 sector;
} bhdr;
static volatile u8 bstatus;
static u8 buf[4096] __attribute__((aligned(4096)));
static u8 pat[512];

/* blk_setup lays out header, data and status descriptors. */
static void blk_setup(struct vq *q, u32 type, void *data, u32 len) {
	bhdr.type = type;
	q->desc[0] = (struct desc){(u64)&bhdr, sizeof bhdr, D_NEXT, 1};
	q->desc[1] = (struct desc){(u64)data, len, D_NEXT | (type == BLK_T_OUT ? 0 : D_WRITE), 2};
	q->desc[2] = (struct desc){(u64)&bstatus, 1, D_WRITE, 0};
	if (!len) q->desc[1] = q->desc[2];
}

/* blk_do runs one request; returns its status, or -1 on timeout. */
static int blk_do(struct vq *q, u32 type, u64 sector, void *data, u32 len) {
	blk_setup(q, type, data, len);
	bhdr.sector = sector;
	bstatus = 0xff;
	vq_kick(q, 0);
	if (vq_wait(q, 0) < 0) return -1;
	return bstatus;
}

static u32 fnv1a(const u8 *p, u32 n) {
	u32 h = 2166136261u;
	for (u32 i = 0; i < n; i++) h = (h ^ p[i]) * 16777619u;
	return h;
}

static char *hex(char *p, const u8 *b, u32 n, char sep) {
	for (u32 i = 0; i < n; i++) {
		if (i && sep) *p++ = sep;
		*p++ = "0123456789abcdef"[b[i] >> 4];
		*p++ = "0123456789abcdef"[b[i] & 15];
	}
	*p = 0;
	return p;
}

static int test_blk(u64 base) {
	long f = dev_init(base, BLK_F_RO | BLK_F_FLUSH, 1);
	if (f < 0) return 10;
	struct vq *q = &vqs[0];
	u64 cap = reg_r(base, R_CONFIG) | (u64)reg_r(base, R_CONFIG + 4) << 32;
	if (blk_do(q, BLK_T_IN, 0, buf, 512) != 0) return 11;
	print("blk: %u sectors%s, sector 0 fnv1a %x\n", cap, (f & BLK_F_RO) ? " read-only" : "", (u64)fnv1a(buf, 512));
	char id[21] = {0};
	if (blk_do(q, BLK_T_GET_ID, 0, id, 20) != 0) return 12;
	print("blk: id \"%s\"\n", id);
	for (u32 i = 0; i < 512; i++) pat[i] = (u8)(i * 7 + 1);
	int st = blk_do(q, BLK_T_OUT, 1, pat, 512);
	if (f & BLK_F_RO) {
		if (st != 1) return 13;
		print("blk: read-only disk refused the write (status %u)\n", (u64)st);
		return 0;
	}
	if (st != 0) return 13;
	if ((f & BLK_F_FLUSH) && blk_do(q, BLK_T_FLUSH, 0, 0, 0) != 0) return 15;
	if (blk_do(q, BLK_T_IN, 1, buf, 512) != 0) return 11;
	for (u32 i = 0; i < 512; i++)
		if (buf[i] != pat[i]) return 14;
	print("blk: sector 1 written, flushed and read back ok\n");
	return 0;
}

static int test_rng(u64 base) {
	if (dev_init(base, 0, 1) < 0) return 20;
	struct vq *q = &vqs[0];
	q->desc[0] = (struct desc){(u64)buf, 16, D_WRITE, 0};
	vq_kick(q, 0);
	u32 len = 0;
	if (vq_wait(q, &len) < 0 || len != 16) return 21;
	char s[40];
	hex(s, buf, 16, 0);
	print("rng: 16 bytes %s\n", s);
	return 0;
}

#define RXBUF (NET_HDR + 1514)
static u8 rx[2][RXBUF];
static u8 tx[NET_HDR + 60];

static int test_net(u64 base) {
	long f = dev_init(base, NET_F_MAC, 2);
	if (f < 0) return 30;
	struct vq *rq = &vqs[0], *tq = &vqs[1];
	u8 *frame = tx + NET_HDR;
	for (u32 i = 0; i < 6; i++) {
		frame[i] = 0xff;
		frame[6 + i] = (f & NET_F_MAC) ? mmio_read8(base + R_CONFIG + i) : (u8)(i == 0 ? 2 : i);
	}
	frame[12] = ETHERTYPE_HI;
	frame[13] = ETHERTYPE_LO;
	const char *msg = "microvm virtio-net ping";
	for (u32 i = 0; msg[i]; i++) frame[14 + i] = (u8)msg[i];
	char s[40];
	hex(s, frame + 6, 6, ':');
	print("net: mac %s\n", s);
	for (u16 i = 0; i < 2; i++) {
		rq->desc[i] = (struct desc){(u64)rx[i], RXBUF, D_WRITE, 0};
		vq_kick(rq, i);
	}
	tq->desc[0] = (struct desc){(u64)tx, sizeof tx, 0, 0};
	vq_kick(tq, 0);
	if (vq_wait(tq, 0) < 0) return 31;
	print("net: sent a %u-byte broadcast frame\n", (u64)(sizeof tx - NET_HDR));
	for (u32 tries = 0; tries < 64; tries++) {
		u32 len = 0;
		int id = vq_wait(rq, &len);
		if (id < 0 || id > 1) return 32;
		u8 *in = rx[id] + NET_HDR;
		if (len >= NET_HDR + 14 && in[12] == ETHERTYPE_HI && in[13] == ETHERTYPE_LO) {
			u32 n = len - NET_HDR - 14, k = 0;
			while (k < n && k < 64 && in[14 + k] >= ' ' && in[14 + k] < 127) k++;
			hex(s, in + 6, 6, ':');
			print("net: received a %u-byte frame from %s: \"", (u64)(len - NET_HDR), s);
			putn((const char *)in + 14, k);
			puts("\"\n");
			return 0;
		}
		vq_kick(rq, (u16)id); /* not ours (e.g. IPv6 neighbour discovery): repost */
	}
	return 32;
}

/* number_after finds "key" in the cmdline and parses the decimal after it. */
static u64 number_after(const char *s, u32 n, const char *key, u64 dflt) {
	u64 k = strlen(key);
	for (u32 i = 0; i + k <= n; i++) {
		u64 j = 0;
		while (j < k && s[i + j] == key[j]) j++;
		if (j < k) continue;
		u64 v = 0;
		for (i += k; i < n && s[i] >= '0' && s[i] <= '9'; i++) v = v * 10 + (u64)(s[i] - '0');
		return v;
	}
	return dflt;
}

/* bench does n random 4 KiB reads from the disk at base (xorshift64 from a
 * fixed seed, so the host can repeat the same reads). */
static int bench(u64 base, u64 n) {
	if (dev_init(base, 0, 1) < 0) return 40;
	struct vq *q = &vqs[0];
	u64 blocks = (reg_r(base, R_CONFIG) | (u64)reg_r(base, R_CONFIG + 4) << 32) / 8;
	if (!blocks) return 40;
	print("bench: %u random 4 KiB reads over %u blocks\n", n, blocks);
	blk_setup(q, BLK_T_IN, buf, 4096);
	u64 x = 0x9e3779b97f4a7c15ul;
	ready();
	for (u64 i = 0; i < n; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		bhdr.sector = (x % blocks) * 8;
		vq_kick(q, 0);
		if (vq_wait(q, 0) < 0 || bstatus != 0) return 41;
	}
	return 0;
}

#define S_NEEDS_RESET 0x40

/* wait_needs_reset polls the status register (the device may process the
 * queue on another host thread) until NEEDS_RESET shows, at most ~10 s. */
static int wait_needs_reset(u64 base) {
	u64 deadline = rdtsc() + tsc_per_10s;
	while (!(reg_r(base, R_STATUS) & S_NEEDS_RESET))
		if (rdtsc() > deadline) return 0;
	return 1;
}

static int hostile(u64 base) {
	static const char *what[] = {"descriptor loop", "buffer outside RAM", "queue size 6"};
	for (u32 k = 0; k < 3; k++) {
		if (dev_init(base, 0, 1) < 0) return 50;
		struct vq *q = &vqs[0];
		if (k == 0) {
			q->desc[0] = (struct desc){(u64)&bhdr, sizeof bhdr, D_NEXT, 1};
			q->desc[1] = (struct desc){(u64)buf, 512, D_NEXT, 0}; /* back to 0 */
			vq_kick(q, 0);
		} else if (k == 1) {
			blk_setup(q, BLK_T_IN, (void *)0x7ff000000000ul, 512);
			vq_kick(q, 0);
		} else {
			reg_w(base, R_STATUS, 0);
			reg_w(base, R_STATUS, S_ACK | S_DRIVER);
			reg_w(base, R_DRV_FEAT_SEL, 1);
			reg_w(base, R_DRV_FEAT, 1);
			reg_w(base, R_STATUS, S_ACK | S_DRIVER | S_FEATURES_OK);
			reg_w(base, R_QUEUE_SEL, 0);
			reg_w(base, R_QUEUE_NUM, 6);
			reg_w(base, R_QUEUE_READY, 1);
		}
		if (!wait_needs_reset(base)) return 51;
		print("hostile: %s: device status %x (NEEDS_RESET)\n", what[k], (u64)reg_r(base, R_STATUS));
		if (dev_init(base, 0, 1) < 0 || blk_do(&vqs[0], BLK_T_IN, 0, buf, 512) != 0) return 52;
		print("hostile: after a reset the disk reads again\n");
	}
	return 0;
}

int main(const struct bootinfo *bi, u64 cpu) {
	(void)cpu;
	if (!check_bootinfo(bi)) return 1;
	if (bi->version < 2) {
		print("virtio: boot info v%u has no device table (need v2)\n", (u64)bi->version);
		return 2;
	}
	tsc_per_10s = (bi->tsc_khz ? bi->tsc_khz : 1000000) * 10000;
	const struct bootdev *dev = (const struct bootdev *)bi->devices_addr;
	u32 ndev = bi->devices_count;
	u64 nbench = number_after((const char *)bi->cmdline_addr, bi->cmdline_len, "bench=", ~0ul);
	if (nbench != ~0ul) { /* bench=0 sets the device up and stops: the baseline */
		for (u32 i = 0; i < ndev; i++)
			if (dev[i].type == BOOTDEV_BLK) return bench(dev[i].mmio_base, nbench);
		return 40;
	}
	if (number_after((const char *)bi->cmdline_addr, bi->cmdline_len, "hostile", ~0ul) != ~0ul) {
		for (u32 i = 0; i < ndev; i++)
			if (dev[i].type == BOOTDEV_BLK) return hostile(dev[i].mmio_base);
		return 50;
	}
	print("virtio: %u devices\n", (u64)ndev);
	if (!ndev) return 3;
	int failed = 0;
	for (u32 i = 0; i < ndev; i++) {
		const struct bootdev *d = &dev[i];
		static const char *names[] = {"?", "net", "blk", "?", "rng"};
		print("virtio: %s at %x irq %u\n", d->type < 5 ? names[d->type] : "?", d->mmio_base, (u64)d->irq);
		int st = 0;
		switch (d->type) {
		case BOOTDEV_BLK: st = test_blk(d->mmio_base); break;
		case BOOTDEV_RNG: st = test_rng(d->mmio_base); break;
		case BOOTDEV_NET: st = test_net(d->mmio_base); break;
		}
		reg_w(d->mmio_base, R_STATUS, 0); /* done with it: reset */
		if (st) {
			print("virtio: device %u failed with status %u\n", (u64)i, (u64)st);
			if (!failed) failed = st;
		}
	}
	if (!failed) print("virtio: all devices passed\n");
	return failed;
}
