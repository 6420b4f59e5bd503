#include "sysinfo.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

char g_root[512] = "";

const char *const sock_proto_name[4] = {"tcp", "tcp6", "udp", "udp6"};

int rpath(char *out, size_t cap, const char *path) {
  int n = snprintf(out, cap, "%s%s", g_root, path);
  return (n < 0 || (size_t)n >= cap) ? -1 : 0;
}

ssize_t read_small(const char *path, char *buf, size_t cap) {
  int fd;
  do fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
  while (fd < 0 && errno == EINTR);
  if (fd < 0) return -1;
  size_t len = 0;
  while (len + 1 < cap) {
    ssize_t r = read(fd, buf + len, cap - 1 - len);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) break;
    len += (size_t)r;
  }
  close(fd);
  buf[len] = '\0';
  return (ssize_t)len;
}

static void rtrim(char *s) {
  size_t n = strlen(s);
  while (n > 0 && isspace((unsigned char)s[n - 1])) s[--n] = '\0';
}

ssize_t read_rooted_trim(const char *path, char *buf, size_t cap) {
  char p[1024];
  if (rpath(p, sizeof p, path) < 0) return -1;
  ssize_t n = read_small(p, buf, cap);
  if (n < 0) return -1;
  rtrim(buf);
  return (ssize_t)strlen(buf);
}

static int64_t clock_ms(clockid_t id) {
  struct timespec ts;
  if (clock_gettime(id, &ts) != 0) return 0;
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

uint64_t boottime_ms(void) { return (uint64_t)clock_ms(CLOCK_BOOTTIME); }
int64_t mono_ms(void) { return clock_ms(CLOCK_MONOTONIC); }

/* One line into buf (newline stripped); the rest of an overlong line is skipped. */
static bool read_line(FILE *f, char *buf, size_t cap) {
  if (!fgets(buf, (int)cap, f)) return false;
  size_t n = strlen(buf);
  if (n > 0 && buf[n - 1] == '\n') {
    buf[n - 1] = '\0';
  } else {
    int c;
    while ((c = fgetc(f)) != EOF && c != '\n') {
    }
  }
  return true;
}

static FILE *open_rooted(const char *path) {
  char p[1024];
  if (rpath(p, sizeof p, path) < 0) return NULL;
  return fopen(p, "re");
}

bool tcp_port_listening(unsigned port) {
  static const char *const files[] = {"/proc/net/tcp", "/proc/net/tcp6"};
  for (size_t k = 0; k < 2; k++) {
    FILE *f = open_rooted(files[k]);
    if (!f) continue;
    char line[512];
    bool found = false, header = true;
    while (!found && read_line(f, line, sizeof line)) {
      if (header) {
        header = false;
        continue;
      }
      unsigned lport, st;
      if (sscanf(line, " %*u: %*[0-9A-Fa-f]:%x %*[0-9A-Fa-f]:%*x %x", &lport, &st) == 2 && st == 0x0A &&
          lport == port)
        found = true;
    }
    fclose(f);
    if (found) return true;
  }
  return false;
}

/* ---------- host keys ---------- */

static int cmp_str(const void *a, const void *b) { return strcmp((const char *)a, (const char *)b); }

void read_host_keys(struct hostkeys *hk) {
  enum { MAX_NAMES = 32 };
  static char names[MAX_NAMES][256];
  int nn = 0;
  hk->n = 0;
  char dir[1024];
  if (rpath(dir, sizeof dir, "/etc/ssh") < 0) return;
  DIR *d = opendir(dir);
  if (!d) return;
  struct dirent *e;
  while ((e = readdir(d)) != NULL && nn < MAX_NAMES) {
    size_t l = strlen(e->d_name);
    if (l < 18 || l >= sizeof names[0]) continue;
    if (strncmp(e->d_name, "ssh_host_", 9) != 0 || strcmp(e->d_name + l - 8, "_key.pub") != 0) continue;
    memcpy(names[nn++], e->d_name, l + 1);
  }
  closedir(d);
  qsort(names, (size_t)nn, sizeof names[0], cmp_str);
  for (int i = 0; i < nn && hk->n < HOSTKEY_MAX; i++) {
    char p[1400];
    if (snprintf(p, sizeof p, "%s/%s", dir, names[i]) >= (int)sizeof p) continue;
    char *k = hk->key[hk->n];
    if (read_small(p, k, HOSTKEY_LEN) <= 0) continue;
    char *nl = strchr(k, '\n');
    if (nl) *nl = '\0';
    rtrim(k);
    if (k[0] == '\0') continue;
    hk->n++;
  }
}

/* ---------- listening sockets ---------- */

static bool decode_addr(const char *hex, bool v6, char *out, size_t cap) {
  unsigned char bytes[16];
  size_t words = v6 ? 4 : 1;
  if (strlen(hex) != words * 8) return false;
  for (size_t w = 0; w < words; w++) {
    char chunk[9];
    memcpy(chunk, hex + w * 8, 8);
    chunk[8] = '\0';
    /* the kernel prints each 32-bit word of the address in host byte order */
    uint32_t v = (uint32_t)strtoul(chunk, NULL, 16);
    memcpy(bytes + w * 4, &v, 4);
  }
  return inet_ntop(v6 ? AF_INET6 : AF_INET, bytes, out, (socklen_t)cap) != NULL;
}

static int cmp_sock(const void *a, const void *b) {
  const struct sock_entry *x = a, *y = b;
  if (x->proto != y->proto) return (int)x->proto - (int)y->proto;
  if (x->port != y->port) return x->port < y->port ? -1 : 1;
  return strcmp(x->addr, y->addr);
}

struct inode_pid {
  unsigned long inode;
  int pid;
};

static int cmp_inode(const void *a, const void *b) {
  const struct inode_pid *x = a, *y = b;
  return x->inode < y->inode ? -1 : x->inode > y->inode ? 1 : 0;
}

static bool all_digits(const char *s) {
  if (!*s) return false;
  for (; *s; s++)
    if (*s < '0' || *s > '9') return false;
  return true;
}

/* Walk the /proc/<pid>/fd links for `socket:[inode]` links; first (lowest) pid wins. */
static void map_pids(struct inode_pid *map, int n) {
  char procdir[1024];
  if (n == 0 || rpath(procdir, sizeof procdir, "/proc") < 0) return;
  DIR *pd = opendir(procdir);
  if (!pd) return;
  int left = n;
  struct dirent *pe;
  while (left > 0 && (pe = readdir(pd)) != NULL) {
    if (!all_digits(pe->d_name)) continue;
    char fddir[1400];
    if (snprintf(fddir, sizeof fddir, "%s/%s/fd", procdir, pe->d_name) >= (int)sizeof fddir) continue;
    DIR *fd = opendir(fddir);
    if (!fd) continue;
    struct dirent *fe;
    while (left > 0 && (fe = readdir(fd)) != NULL) {
      if (fe->d_name[0] == '.') continue;
      char link[64];
      ssize_t l = readlinkat(dirfd(fd), fe->d_name, link, sizeof link - 1);
      if (l <= 9) continue;
      link[l] = '\0';
      if (strncmp(link, "socket:[", 8) != 0) continue;
      struct inode_pid key = {strtoul(link + 8, NULL, 10), 0};
      struct inode_pid *hit = bsearch(&key, map, (size_t)n, sizeof *map, cmp_inode);
      if (hit && hit->pid == 0) {
        hit->pid = atoi(pe->d_name);
        left--;
      }
    }
    closedir(fd);
  }
  closedir(pd);
}

/*
 * /proc/<pid>/cmdline as one line: NUL separators and control characters become
 * spaces, trailing spaces go, and a cut never splits a UTF-8 sequence.
 */
static void read_cmdline(int pid, char *out, size_t cap) {
  char rel[64], p[1024];
  out[0] = '\0';
  snprintf(rel, sizeof rel, "/proc/%d/cmdline", pid);
  if (rpath(p, sizeof p, rel) < 0) return;
  ssize_t n = read_small(p, out, cap);
  if (n <= 0) {
    out[0] = '\0';
    return;
  }
  size_t len = (size_t)n;
  if (len == cap - 1) { /* possibly cut: drop a partial UTF-8 sequence at the end */
    size_t k = len;
    while (k > 0 && ((unsigned char)out[k - 1] & 0xC0) == 0x80) k--;
    if (k > 0) {
      unsigned char lead = (unsigned char)out[k - 1];
      size_t need = lead >= 0xF0 ? 4 : lead >= 0xE0 ? 3 : lead >= 0xC0 ? 2 : 1;
      if (len - (k - 1) < need) len = k - 1;
    }
  }
  for (size_t i = 0; i < len; i++)
    if ((unsigned char)out[i] < 0x20 || out[i] == 0x7f) out[i] = ' ';
  while (len > 0 && out[len - 1] == ' ') len--;
  out[len] = '\0';
}

int list_listening(struct sock_entry *out, int max, bool *truncated) {
  static const char *const files[4] = {"/proc/net/tcp", "/proc/net/tcp6", "/proc/net/udp", "/proc/net/udp6"};
  int n = 0;
  *truncated = false;
  for (int k = 0; k < 4; k++) {
    FILE *f = open_rooted(files[k]);
    if (!f) continue;
    bool tcp = k < 2, v6 = (k % 2) == 1, header = true;
    char line[512];
    while (read_line(f, line, sizeof line)) {
      if (header) {
        header = false;
        continue;
      }
      char local[65], remote[65];
      unsigned lport, rport, st;
      unsigned long inode;
      if (sscanf(line, " %*u: %64[0-9A-Fa-f]:%x %64[0-9A-Fa-f]:%x %x %*s %*s %*s %*u %*u %lu", local, &lport, remote,
                 &rport, &st, &inode) != 6)
        continue;
      /* TCP: LISTEN (0x0A). UDP: unconnected bound sockets (CLOSE, 0x07, no peer). */
      if (tcp ? st != 0x0A : (st != 0x07 || rport != 0 || lport == 0)) continue;
      if (n >= max) {
        *truncated = true;
        break;
      }
      struct sock_entry *e = &out[n];
      memset(e, 0, sizeof *e);
      if (!decode_addr(local, v6, e->addr, sizeof e->addr)) continue;
      e->proto = (enum sock_proto)k;
      e->port = lport;
      e->inode = inode;
      n++;
    }
    fclose(f);
  }
  qsort(out, (size_t)n, sizeof *out, cmp_sock);

  static struct inode_pid map[SOCK_MAX];
  int m = 0;
  for (int i = 0; i < n && m < SOCK_MAX; i++)
    if (out[i].inode != 0) map[m++] = (struct inode_pid){out[i].inode, 0};
  qsort(map, (size_t)m, sizeof *map, cmp_inode);
  int u = 0; /* dedupe */
  for (int i = 0; i < m; i++)
    if (u == 0 || map[u - 1].inode != map[i].inode) map[u++] = map[i];
  map_pids(map, u);
  for (int i = 0; i < n; i++) {
    struct inode_pid key = {out[i].inode, 0};
    struct inode_pid *hit = out[i].inode ? bsearch(&key, map, (size_t)u, sizeof *map, cmp_inode) : NULL;
    if (!hit || hit->pid == 0) continue;
    out[i].pid = hit->pid;
    char p[64];
    snprintf(p, sizeof p, "/proc/%d/comm", hit->pid);
    if (read_rooted_trim(p, out[i].comm, sizeof out[i].comm) < 0) out[i].comm[0] = '\0';
    read_cmdline(hit->pid, out[i].cmdline, sizeof out[i].cmdline);
  }
  return n;
}

/* ---------- stats ---------- */

static void fill_disk(struct disk_usage *d, const char *mount) {
  char p[1024];
  struct statvfs sv;
  d->mount = mount;
  d->ok = false;
  if (rpath(p, sizeof p, mount) < 0 || statvfs(p, &sv) != 0) return;
  uint64_t fr = sv.f_frsize ? sv.f_frsize : sv.f_bsize;
  d->total = (uint64_t)sv.f_blocks * fr;
  d->free = (uint64_t)sv.f_bfree * fr;
  d->avail = (uint64_t)sv.f_bavail * fr;
  d->ok = true;
}

/* Established (0x01) TCP connections whose local port is 22, from /proc/net/tcp and tcp6. */
static unsigned count_ssh_sessions(void) {
  static const char *const files[2] = {"/proc/net/tcp", "/proc/net/tcp6"};
  unsigned n = 0;
  for (int k = 0; k < 2; k++) {
    FILE *f = open_rooted(files[k]);
    if (!f) continue;
    char line[512];
    bool header = true;
    while (read_line(f, line, sizeof line)) {
      if (header) {
        header = false;
        continue;
      }
      unsigned lport, st;
      if (sscanf(line, " %*u: %*[0-9A-Fa-f]:%x %*[0-9A-Fa-f]:%*x %x", &lport, &st) != 2) continue;
      if (lport == 22 && st == 0x01) n++;
    }
    fclose(f);
  }
  return n;
}

void read_stats(struct sys_stats *st) {
  memset(st, 0, sizeof *st);
  st->uptime_ms = boottime_ms();

  char buf[4096];
  if (read_rooted_trim("/proc/loadavg", buf, sizeof buf) > 0)
    sscanf(buf, "%lf %lf %lf", &st->load1, &st->load5, &st->load15);

  FILE *f = open_rooted("/proc/meminfo");
  if (f) {
    char line[256];
    while (read_line(f, line, sizeof line)) {
      unsigned long long v;
      if (sscanf(line, "MemTotal: %llu", &v) == 1) st->mem_total_kib = v;
      else if (sscanf(line, "MemAvailable: %llu", &v) == 1) st->mem_available_kib = v;
      else if (sscanf(line, "MemFree: %llu", &v) == 1) st->mem_free_kib = v;
    }
    fclose(f);
  }

  f = open_rooted("/proc/stat");
  if (f) {
    char line[512];
    while (read_line(f, line, sizeof line)) {
      if (strncmp(line, "cpu ", 4) == 0) {
        unsigned long long t[10] = {0};
        int got = sscanf(line + 4, "%llu %llu %llu %llu %llu %llu %llu %llu %llu %llu", &t[0], &t[1], &t[2], &t[3],
                         &t[4], &t[5], &t[6], &t[7], &t[8], &t[9]);
        if (got >= 4) {
          st->have_cpu = true;
          st->cpu = (struct cpu_ticks){t[0], t[1], t[2], t[3], t[4], t[5], t[6], t[7], t[8], t[9]};
        }
      } else if (strncmp(line, "cpu", 3) == 0 && line[3] >= '0' && line[3] <= '9') {
        st->cpus++;
      }
    }
    fclose(f);
  }

  fill_disk(&st->disks[0], "/");
  fill_disk(&st->disks[1], "/root");
  st->ssh_sessions = count_ssh_sessions();
}
