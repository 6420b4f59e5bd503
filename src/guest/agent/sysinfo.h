/*
 * Facts about the guest, read from /proc, /etc/ssh and statvfs. Every path is
 * prefixed with g_root (empty for the real system) so tests can feed fixtures.
 */
#ifndef BANGER_AGENT_SYSINFO_H
#define BANGER_AGENT_SYSINFO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

extern char g_root[512];

/* g_root + path into out; returns -1 when it does not fit. */
int rpath(char *out, size_t cap, const char *path);
/* Read up to cap-1 bytes of a (small) file, NUL-terminated. Returns bytes read or -1. */
ssize_t read_small(const char *path, char *buf, size_t cap);
/* Same, for a path under g_root, with trailing whitespace trimmed. */
ssize_t read_rooted_trim(const char *path, char *buf, size_t cap);

uint64_t boottime_ms(void);
int64_t mono_ms(void);

/* Is something in LISTEN state on TCP port `port` (IPv4 or IPv6)? Does not connect. */
bool tcp_port_listening(unsigned port);

#define HOSTKEY_MAX 8
#define HOSTKEY_LEN 2048
struct hostkeys {
  int n;
  char key[HOSTKEY_MAX][HOSTKEY_LEN];
};
/* /etc/ssh/ssh_host_*_key.pub, sorted by file name. */
void read_host_keys(struct hostkeys *hk);

enum sock_proto { SP_TCP, SP_TCP6, SP_UDP, SP_UDP6 };
extern const char *const sock_proto_name[4];

#define SOCK_MAX 1024
/* The ports answer stops (truncated: true) before it would pass the 64 KiB answer limit. */
#define SOCK_CMDLINE_MAX 160
struct sock_entry {
  enum sock_proto proto;
  char addr[48];
  unsigned port;
  unsigned long inode;
  int pid; /* 0 = unknown */
  char comm[32];
  char cmdline[SOCK_CMDLINE_MAX + 1]; /* arguments joined by spaces, cut at SOCK_CMDLINE_MAX bytes */
};
/* Listening TCP sockets and unconnected bound UDP sockets, sorted; pids resolved. */
int list_listening(struct sock_entry *out, int max, bool *truncated);

struct cpu_ticks {
  uint64_t user, nice, system, idle, iowait, irq, softirq, steal, guest, guest_nice;
};
struct disk_usage {
  const char *mount;
  bool ok;
  uint64_t total, free, avail;
};
struct sys_stats {
  uint64_t uptime_ms;
  double load1, load5, load15;
  uint64_t mem_total_kib, mem_available_kib, mem_free_kib;
  bool have_cpu;
  struct cpu_ticks cpu;
  unsigned cpus;
  struct disk_usage disks[2];
  /* Established TCP connections to local port 22 (v4 and v6): open ssh sessions. */
  unsigned ssh_sessions;
};
void read_stats(struct sys_stats *st);

#endif
