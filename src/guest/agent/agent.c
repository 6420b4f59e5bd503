/*
 * banger-agent: the guest side of banger's host <-> guest channel.
 *
 * Newline-delimited JSON over a byte stream (virtio-serial port, vsock, or a
 * Unix socket for tests). One thread, one poll loop: every request is answered
 * at once except `wait-ready`, which parks a waiter that the loop completes
 * when sshd starts listening (read from /proc/net/tcp*, never by connecting).
 * See docs/guest-agent.md for the protocol.
 */
#include "identity.h"
#include "growfs.h"
#include "json.h"
#include "sysinfo.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/reboot.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef BANGER_AGENT_VERSION
#define BANGER_AGENT_VERSION "0.0.0-dev"
#endif
#define PROTOCOL_VERSION 1

#ifndef AF_VSOCK
#define AF_VSOCK 40
#endif
#define VMADDR_CID_ANY_ 0xFFFFFFFFu
/* Same layout as struct sockaddr_vm in <linux/vm_sockets.h> (not shipped with musl). */
struct sockaddr_vm_ {
  unsigned short svm_family;
  unsigned short svm_reserved1;
  unsigned int svm_port;
  unsigned int svm_cid;
  unsigned char svm_flags;
  unsigned char svm_zero[3];
};

#define MAX_CONNS 16
#define IN_CAP 65536 /* one request line, newline included */
#define RESP_CAP (64 * 1024) /* the host drops the channel on a longer line */
#define OUT_CAP (1024 * 1024)
#define OUT_HIGH (OUT_CAP - RESP_CAP) /* stop reading requests above this much queued output */
#define MAX_WAITERS 64
#define MAX_WAIT_MS (24LL * 3600 * 1000)
#define SERIAL_BACKOFF_MS 200
#define DIAL_RETRY_MS 200
#define PROBE_MS 500
#define POWER_FLUSH_MS 1000
#define READY_FAST_WINDOW_MS (120 * 1000)

static const char *const k_ops[] = {"hello",    "wait-ready", "ports",    "stats",       "sync",
                                    "poweroff", "reboot",     "set-time", "set-identity", "grow-fs"};
#define N_OPS (sizeof k_ops / sizeof k_ops[0])

/* ---------- options ---------- */

enum mode { M_AUTO, M_SERIAL, M_VSOCK, M_UNIX };

static struct {
  enum mode mode;
  const char *port_name;
  unsigned vsock_port;
  const char *listen_unix;
  const char *connect_unix;
  unsigned ssh_port;
  int ready_poll_ms;
  bool dry_power;
} opt = {M_AUTO, "banger.agent", 52, NULL, NULL, 22, 100, false};

/* ---------- logging ---------- */

static void logmsg(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void logmsg(const char *fmt, ...) {
  char line[600];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(line, sizeof line - 1, fmt, ap);
  va_end(ap);
  if (n < 0) return;
  if ((size_t)n > sizeof line - 2) n = (int)sizeof line - 2;
  line[n++] = '\n';
  /* one write per line so concurrent writers don't interleave; best effort */
  char full[640];
  int m = snprintf(full, sizeof full, "banger-agent: %.*s", n, line);
  if (m > 0) {
    ssize_t w;
    do w = write(STDERR_FILENO, full, (size_t)(m < (int)sizeof full ? m : (int)sizeof full - 1));
    while (w < 0 && errno == EINTR);
  }
}

/* ---------- connections ---------- */

enum ckind { CK_FREE, CK_CLIENT, CK_SERIAL, CK_DIAL };

struct conn {
  enum ckind kind;
  int fd; /* -1 while a serial port / dial target is not open */
  unsigned gen; /* bumped whenever the peer session ends; waiters hold a copy */
  char *in;
  size_t inlen;
  bool discarding; /* skipping the rest of an oversized line */
  char *out;
  size_t outoff, outlen;
  int host_state; /* serial: -1 unknown, 0 host not connected, 1 connected */
  int64_t retry_at;
  int broken; /* errno of a failed read/write, handled by the loop */
  char path[512];
};

static struct conn g_conns[MAX_CONNS];
static int g_unix_lfd = -1, g_vsock_lfd = -1;
static char g_serial_dev[512];
static const char *g_transport = "none";

static struct {
  bool used;
  int conn;
  unsigned gen;
  uint64_t id;
  int64_t deadline; /* mono ms, or -1 for none */
  int64_t timeout_ms;
} g_waiters[MAX_WAITERS];
static int g_nwaiters;

static bool g_ready_seen;
static uint64_t g_ready_at_ms;

enum power { PW_NONE, PW_POWEROFF, PW_REBOOT };
static struct {
  enum power action;
  int conn;
  unsigned gen;
  int64_t deadline;
} g_power;

static volatile sig_atomic_t g_stop;
static char g_resp[RESP_CAP];

static struct conn *conn_new(enum ckind kind, int fd) {
  for (int i = 0; i < MAX_CONNS; i++) {
    struct conn *c = &g_conns[i];
    if (c->kind != CK_FREE) continue;
    c->in = malloc(IN_CAP);
    c->out = malloc(OUT_CAP);
    if (!c->in || !c->out) {
      free(c->in);
      free(c->out);
      c->in = c->out = NULL;
      return NULL;
    }
    c->kind = kind;
    c->fd = fd;
    c->gen++;
    c->inlen = c->outoff = c->outlen = 0;
    c->discarding = false;
    c->host_state = -1;
    c->retry_at = 0;
    c->broken = 0;
    c->path[0] = '\0';
    return c;
  }
  return NULL;
}

/* The peer session ended: forget buffered input/output and its waiters. */
static void conn_reset_session(struct conn *c) {
  c->inlen = c->outoff = c->outlen = 0;
  c->discarding = false;
  c->broken = 0;
  c->gen++;
}

static void conn_close_fd(struct conn *c) {
  if (c->fd >= 0) close(c->fd);
  c->fd = -1;
  conn_reset_session(c);
}

static void conn_free(struct conn *c) {
  conn_close_fd(c);
  free(c->in);
  free(c->out);
  c->in = c->out = NULL;
  c->kind = CK_FREE;
}

static size_t conn_pending(const struct conn *c) { return c->outlen - c->outoff; }

static void conn_flush(struct conn *c) {
  while (c->fd >= 0 && !c->broken && c->outoff < c->outlen) {
    ssize_t w = write(c->fd, c->out + c->outoff, c->outlen - c->outoff);
    if (w > 0) {
      c->outoff += (size_t)w;
    } else if (w < 0 && errno == EINTR) {
      continue;
    } else if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      break;
    } else {
      c->broken = w < 0 ? errno : EIO;
    }
  }
  if (c->outoff == c->outlen) c->outoff = c->outlen = 0;
}

static void conn_send(struct conn *c, const char *data, size_t n) {
  if (c->fd < 0 || c->broken) return;
  if (c->kind == CK_SERIAL && c->host_state == 0) return; /* nobody listening: drop */
  if (c->outlen + n > OUT_CAP && c->outoff > 0) {
    memmove(c->out, c->out + c->outoff, c->outlen - c->outoff);
    c->outlen -= c->outoff;
    c->outoff = 0;
  }
  if (c->outlen + n > OUT_CAP) {
    logmsg("output queue full, dropping a %zu-byte message", n);
    return;
  }
  memcpy(c->out + c->outlen, data, n);
  c->outlen += n;
  conn_flush(c);
}

static void broadcast(const char *data, size_t n) {
  for (int i = 0; i < MAX_CONNS; i++)
    if (g_conns[i].kind != CK_FREE) conn_send(&g_conns[i], data, n);
}

/* ---------- responses ---------- */

static void send_error(struct conn *c, bool has_id, uint64_t id, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static void send_error(struct conn *c, bool has_id, uint64_t id, const char *code, const char *fmt, ...) {
  char msg[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  char buf[1024];
  struct jb j;
  jb_init(&j, buf, sizeof buf);
  jb_begin_obj(&j);
  jb_key(&j, "id");
  if (has_id) jb_u64(&j, id);
  else jb_null(&j);
  jb_key(&j, "ok");
  jb_bool(&j, false);
  jb_key(&j, "error");
  jb_str(&j, msg);
  jb_key(&j, "code");
  jb_str(&j, code);
  jb_end_obj(&j);
  jb_raw(&j, "\n", 1);
  if (!j.overflow) conn_send(c, j.buf, j.len);
}

static void begin_ok(struct jb *j, uint64_t id) {
  jb_init(j, g_resp, sizeof g_resp);
  jb_begin_obj(j);
  jb_key(j, "id");
  jb_u64(j, id);
  jb_key(j, "ok");
  jb_bool(j, true);
  jb_key(j, "result");
}

static void finish_ok(struct conn *c, struct jb *j, uint64_t id) {
  jb_end_obj(j);
  jb_raw(j, "\n", 1);
  if (j->overflow) send_error(c, true, id, "failed", "response too large (over %d bytes)", RESP_CAP);
  else conn_send(c, j->buf, j->len);
}

static void write_ready_result(struct jb *j) {
  static struct hostkeys hk;
  read_host_keys(&hk);
  jb_begin_obj(j);
  jb_key(j, "hostKeys");
  jb_begin_arr(j);
  for (int i = 0; i < hk.n; i++) jb_str(j, hk.key[i]);
  jb_end_arr(j);
  jb_key(j, "readyAtMs");
  jb_u64(j, g_ready_at_ms);
  jb_key(j, "sshPort");
  jb_u64(j, opt.ssh_port);
  jb_end_obj(j);
}

/* ---------- readiness ---------- */

static void answer_waiters(void) {
  for (int i = 0; i < MAX_WAITERS; i++) {
    if (!g_waiters[i].used) continue;
    struct conn *c = &g_conns[g_waiters[i].conn];
    g_waiters[i].used = false;
    g_nwaiters--;
    if (c->kind == CK_FREE || c->gen != g_waiters[i].gen) continue;
    struct jb j;
    begin_ok(&j, g_waiters[i].id);
    write_ready_result(&j);
    finish_ok(c, &j, g_waiters[i].id);
  }
}

/* True when sshd listens now; the first time, log it and emit the ready event. */
static bool check_ready(void) {
  if (!tcp_port_listening(opt.ssh_port)) return false;
  if (!g_ready_seen) {
    g_ready_seen = true;
    g_ready_at_ms = boottime_ms();
    logmsg("sshd ready after %llu ms", (unsigned long long)g_ready_at_ms);
    struct jb j;
    jb_init(&j, g_resp, sizeof g_resp);
    jb_begin_obj(&j);
    jb_key(&j, "event");
    jb_str(&j, "ready");
    /* same fields as the wait-ready result, flattened */
    static struct hostkeys hk;
    read_host_keys(&hk);
    jb_key(&j, "hostKeys");
    jb_begin_arr(&j);
    for (int i = 0; i < hk.n; i++) jb_str(&j, hk.key[i]);
    jb_end_arr(&j);
    jb_key(&j, "readyAtMs");
    jb_u64(&j, g_ready_at_ms);
    jb_key(&j, "sshPort");
    jb_u64(&j, opt.ssh_port);
    jb_end_obj(&j);
    jb_raw(&j, "\n", 1);
    if (!j.overflow) broadcast(j.buf, j.len);
  }
  return true;
}

static void expire_waiters(int64_t now) {
  for (int i = 0; i < MAX_WAITERS; i++) {
    if (!g_waiters[i].used) continue;
    struct conn *c = &g_conns[g_waiters[i].conn];
    bool gone = c->kind == CK_FREE || c->gen != g_waiters[i].gen;
    if (!gone && (g_waiters[i].deadline < 0 || now < g_waiters[i].deadline)) continue;
    g_waiters[i].used = false;
    g_nwaiters--;
    if (!gone)
      send_error(c, true, g_waiters[i].id, "timeout", "sshd is not listening on port %u after %lld ms", opt.ssh_port,
                 (long long)g_waiters[i].timeout_ms);
  }
}

/* ---------- ops ---------- */

static bool sd_booted(void) {
  char p[1024];
  struct stat st;
  return rpath(p, sizeof p, "/run/systemd/system") == 0 && lstat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

static void op_hello(struct conn *c, uint64_t id) {
  char host[256], boot[64];
  if (read_rooted_trim("/proc/sys/kernel/hostname", host, sizeof host) <= 0) {
    if (gethostname(host, sizeof host) != 0) host[0] = '\0';
    host[sizeof host - 1] = '\0';
  }
  bool have_boot = read_rooted_trim("/proc/sys/kernel/random/boot_id", boot, sizeof boot) > 0;
  bool ready = check_ready();
  struct jb j;
  begin_ok(&j, id);
  jb_begin_obj(&j);
  jb_key(&j, "protocol");
  jb_u64(&j, PROTOCOL_VERSION);
  jb_key(&j, "agentVersion");
  jb_str(&j, BANGER_AGENT_VERSION);
  jb_key(&j, "hostname");
  jb_str(&j, host);
  jb_key(&j, "bootId");
  if (have_boot) jb_str(&j, boot);
  else jb_null(&j);
  jb_key(&j, "uptimeMs");
  jb_u64(&j, boottime_ms());
  jb_key(&j, "ready");
  jb_bool(&j, ready);
  jb_key(&j, "transport");
  jb_str(&j, c->kind == CK_SERIAL ? "virtio-serial" : c->kind == CK_DIAL ? "unix" : g_transport);
  jb_key(&j, "ops");
  jb_begin_arr(&j);
  for (size_t i = 0; i < N_OPS; i++) jb_str(&j, k_ops[i]);
  jb_end_arr(&j);
  jb_end_obj(&j);
  finish_ok(c, &j, id);
}

static void op_wait_ready(struct conn *c, uint64_t id, const struct jreq *req) {
  const struct jfield *t = jreq_get(req, "timeoutMs");
  int64_t timeout = -1;
  if (t && t->type != JT_NULL) {
    if (t->type != JT_NUM || !(t->num >= 0)) {
      send_error(c, true, id, "bad_request", "\"timeoutMs\" must be a non-negative number");
      return;
    }
    timeout = t->num > (double)MAX_WAIT_MS ? MAX_WAIT_MS : (int64_t)t->num;
  }
  if (check_ready()) {
    struct jb j;
    begin_ok(&j, id);
    write_ready_result(&j);
    finish_ok(c, &j, id);
    return;
  }
  if (timeout == 0) {
    send_error(c, true, id, "timeout", "sshd is not listening on port %u", opt.ssh_port);
    return;
  }
  for (int i = 0; i < MAX_WAITERS; i++) {
    if (g_waiters[i].used) continue;
    g_waiters[i].used = true;
    g_waiters[i].conn = (int)(c - g_conns);
    g_waiters[i].gen = c->gen;
    g_waiters[i].id = id;
    g_waiters[i].timeout_ms = timeout;
    g_waiters[i].deadline = timeout < 0 ? -1 : mono_ms() + timeout;
    g_nwaiters++;
    return;
  }
  send_error(c, true, id, "busy", "too many pending wait-ready requests (at most %d)", MAX_WAITERS);
}

/* Upper bound of one entry of the ports answer (every string escaped at worst as \u00XX). */
#define PORT_ENTRY_MAX (6 * (48 + 32 + SOCK_CMDLINE_MAX) + 160)

static void op_ports(struct conn *c, uint64_t id) {
  static struct sock_entry socks[SOCK_MAX];
  bool truncated;
  int n = list_listening(socks, SOCK_MAX, &truncated);
  struct jb j;
  begin_ok(&j, id);
  jb_begin_obj(&j);
  jb_key(&j, "ports");
  jb_begin_arr(&j);
  for (int i = 0; i < n; i++) {
    /* Stop while a whole entry and the closing fields still fit in the answer. */
    if (j.len + PORT_ENTRY_MAX + 64 > RESP_CAP) {
      truncated = true;
      break;
    }
    jb_begin_obj(&j);
    jb_key(&j, "proto");
    jb_str(&j, sock_proto_name[socks[i].proto]);
    jb_key(&j, "address");
    jb_str(&j, socks[i].addr);
    jb_key(&j, "port");
    jb_u64(&j, socks[i].port);
    jb_key(&j, "pid");
    if (socks[i].pid > 0) jb_u64(&j, (uint64_t)socks[i].pid);
    else jb_null(&j);
    jb_key(&j, "process");
    if (socks[i].pid > 0 && socks[i].comm[0]) jb_str(&j, socks[i].comm);
    else jb_null(&j);
    jb_key(&j, "cmdline");
    if (socks[i].pid > 0 && socks[i].cmdline[0]) jb_str(&j, socks[i].cmdline);
    else jb_null(&j);
    jb_end_obj(&j);
  }
  jb_end_arr(&j);
  jb_key(&j, "truncated");
  jb_bool(&j, truncated);
  jb_end_obj(&j);
  finish_ok(c, &j, id);
}

static void op_stats(struct conn *c, uint64_t id) {
  struct sys_stats st;
  read_stats(&st);
  struct jb j;
  begin_ok(&j, id);
  jb_begin_obj(&j);
  jb_key(&j, "uptimeMs");
  jb_u64(&j, st.uptime_ms);
  jb_key(&j, "load1");
  jb_fixed2(&j, st.load1);
  jb_key(&j, "load5");
  jb_fixed2(&j, st.load5);
  jb_key(&j, "load15");
  jb_fixed2(&j, st.load15);
  jb_key(&j, "memTotalKib");
  jb_u64(&j, st.mem_total_kib);
  jb_key(&j, "memAvailableKib");
  jb_u64(&j, st.mem_available_kib);
  jb_key(&j, "memFreeKib");
  jb_u64(&j, st.mem_free_kib);
  jb_key(&j, "cpus");
  jb_u64(&j, st.cpus);
  jb_key(&j, "clockTicksPerSec");
  long hz = sysconf(_SC_CLK_TCK);
  jb_u64(&j, hz > 0 ? (uint64_t)hz : 100);
  jb_key(&j, "cpuTicks");
  if (st.have_cpu) {
    const struct cpu_ticks *t = &st.cpu;
    jb_begin_obj(&j);
    jb_key(&j, "user");
    jb_u64(&j, t->user);
    jb_key(&j, "nice");
    jb_u64(&j, t->nice);
    jb_key(&j, "system");
    jb_u64(&j, t->system);
    jb_key(&j, "idle");
    jb_u64(&j, t->idle);
    jb_key(&j, "iowait");
    jb_u64(&j, t->iowait);
    jb_key(&j, "irq");
    jb_u64(&j, t->irq);
    jb_key(&j, "softirq");
    jb_u64(&j, t->softirq);
    jb_key(&j, "steal");
    jb_u64(&j, t->steal);
    jb_key(&j, "guest");
    jb_u64(&j, t->guest);
    jb_key(&j, "guestNice");
    jb_u64(&j, t->guest_nice);
    jb_end_obj(&j);
  } else {
    jb_null(&j);
  }
  jb_key(&j, "disks");
  jb_begin_arr(&j);
  for (int i = 0; i < 2; i++) {
    if (!st.disks[i].ok) continue;
    jb_begin_obj(&j);
    jb_key(&j, "mount");
    jb_str(&j, st.disks[i].mount);
    jb_key(&j, "totalBytes");
    jb_u64(&j, st.disks[i].total);
    jb_key(&j, "freeBytes");
    jb_u64(&j, st.disks[i].free);
    jb_key(&j, "availBytes");
    jb_u64(&j, st.disks[i].avail);
    jb_end_obj(&j);
  }
  jb_end_arr(&j);
  jb_key(&j, "sshSessions");
  jb_u64(&j, st.ssh_sessions);
  jb_end_obj(&j);
  finish_ok(c, &j, id);
}

/* A string field of req, or NULL (bad_request sent) when missing, not a string or cut. */
static const char *str_field(struct conn *c, uint64_t id, const struct jreq *req, const char *key) {
  const struct jfield *f = jreq_get(req, key);
  if (!f || f->type != JT_STR || f->truncated) {
    send_error(c, true, id, "bad_request", "missing or invalid \"%s\": expected a string", key);
    return NULL;
  }
  return f->str;
}

/* A restored VM's new identity (identity.h); answers with the new host keys. */
static void op_set_identity(struct conn *c, uint64_t id, const struct jreq *req) {
  static struct identity ident;
  memset(&ident, 0, sizeof ident);
  const char *host = str_field(c, id, req, "hostname");
  const char *mid = host ? str_field(c, id, req, "machineId") : NULL;
  const char *iface = mid ? str_field(c, id, req, "iface") : NULL;
  const char *mac = iface ? str_field(c, id, req, "mac") : NULL;
  const char *ip = mac ? str_field(c, id, req, "ip") : NULL;
  const char *gw = ip ? str_field(c, id, req, "gateway") : NULL;
  const char *ent = gw ? str_field(c, id, req, "entropy") : NULL;
  if (!ent) return;
  const struct jfield *prefix = jreq_get(req, "prefix"), *tms = jreq_get(req, "timeMs");
  unsigned char mbytes[16];
  const char *bad = NULL;
  if (!valid_hostname(host)) bad = "hostname";
  else if (!parse_hex(mid, mbytes, 16)) bad = "machineId";
  else if (strlen(iface) == 0 || strlen(iface) >= sizeof ident.iface || strchr(iface, '/')) bad = "iface";
  else if (!parse_mac(mac, ident.mac)) bad = "mac";
  else if (!parse_ipv4(ip, &ident.ip)) bad = "ip";
  else if (!parse_ipv4(gw, &ident.gateway)) bad = "gateway";
  else if (!parse_hex(ent, ident.entropy, IDENTITY_ENTROPY_BYTES)) bad = "entropy";
  else if (!prefix || prefix->type != JT_NUM || !(prefix->num >= 1 && prefix->num <= 32) ||
           prefix->num != (double)(unsigned)prefix->num)
    bad = "prefix";
  else if (!tms || tms->type != JT_NUM || !(tms->num > 0)) bad = "timeMs";
  /* optional, both or neither: the new ed25519 host key, made by the host (older daemons send none) */
  const struct jfield *kseed = jreq_get(req, "hostKeySeed"), *kpub = jreq_get(req, "hostKeyPublic");
  if (!bad && (kseed || kpub)) {
    if (!kseed || kseed->type != JT_STR || kseed->truncated ||
        !parse_hex(kseed->str, ident.ed25519_seed, IDENTITY_ED25519_BYTES))
      bad = "hostKeySeed";
    else if (!kpub || kpub->type != JT_STR || kpub->truncated ||
             !parse_hex(kpub->str, ident.ed25519_pub, IDENTITY_ED25519_BYTES))
      bad = "hostKeyPublic";
    else ident.have_ed25519 = true;
  }
  if (bad) {
    memset(&ident, 0, sizeof ident);
    send_error(c, true, id, "bad_request", "invalid \"%s\"", bad);
    return;
  }
  snprintf(ident.hostname, sizeof ident.hostname, "%s", host);
  for (int i = 0; i < 32; i++) ident.machine_id[i] = (char)(mid[i] >= 'A' && mid[i] <= 'F' ? mid[i] + 32 : mid[i]);
  snprintf(ident.iface, sizeof ident.iface, "%s", iface);
  ident.prefix = (unsigned)prefix->num;
  ident.time_ms = tms->num;
  char err[300];
  /* Unix-socket transports are tests on a host: never change its clock, network or sshd. */
  bool dry = opt.mode == M_UNIX;
  if (identity_apply(&ident, dry, opt.ssh_port, err, sizeof err) < 0) {
    memset(&ident, 0, sizeof ident);
    logmsg("set-identity failed: %s", err);
    send_error(c, true, id, "failed", "%s", err);
    return;
  }
  memset(ident.entropy, 0, sizeof ident.entropy);
  explicit_bzero(ident.ed25519_seed, sizeof ident.ed25519_seed);
  logmsg("new identity applied: %s (%s)", ident.hostname, identity_timing);
  static struct hostkeys hk;
  read_host_keys(&hk);
  struct jb j;
  begin_ok(&j, id);
  jb_begin_obj(&j);
  jb_key(&j, "hostKeys");
  jb_begin_arr(&j);
  for (int i = 0; i < hk.n; i++) jb_str(&j, hk.key[i]);
  jb_end_arr(&j);
  jb_key(&j, "hostname");
  jb_str(&j, ident.hostname);
  jb_key(&j, "dryRun");
  jb_bool(&j, dry);
  jb_end_obj(&j);
  finish_ok(c, &j, id);
}

static void op_power(struct conn *c, uint64_t id, enum power action) {
  const char *name = action == PW_POWEROFF ? "poweroff" : "reboot";
  if (g_power.action != PW_NONE) {
    send_error(c, true, id, "busy", "a %s is already in progress", g_power.action == PW_POWEROFF ? "poweroff" : "reboot");
    return;
  }
  struct jb j;
  begin_ok(&j, id);
  jb_begin_obj(&j);
  jb_key(&j, "action");
  jb_str(&j, name);
  jb_key(&j, "method");
  jb_str(&j, sd_booted() ? "systemctl" : "reboot(2)");
  jb_key(&j, "dryRun");
  jb_bool(&j, opt.dry_power);
  jb_end_obj(&j);
  finish_ok(c, &j, id);
  /* act once the reply has left (or after POWER_FLUSH_MS) */
  g_power.action = action;
  g_power.conn = (int)(c - g_conns);
  g_power.gen = c->gen;
  g_power.deadline = mono_ms() + POWER_FLUSH_MS;
}

/* set-time {unixMs}: step CLOCK_REALTIME to the host's time. After a restore
 * from a snapshot the guest clock is behind by however long the VM was saved;
 * the host sends its own time and the step applies at once. With
 * --dry-run-power (or on a Unix-socket transport without --allow-power:
 * tests on the host) it only reports the step it would make. */
static void op_set_time(struct conn *c, uint64_t id, const struct jreq *req) {
  const struct jfield *f = jreq_get(req, "unixMs");
  if (!f || f->type != JT_NUM || !(f->num > 0) || f->num > 9007199254740991.0 ||
      (double)(uint64_t)f->num != f->num) {
    send_error(c, true, id, "bad_request", "missing or invalid \"unixMs\": expected a positive integer");
    return;
  }
  uint64_t ms = (uint64_t)f->num;
  struct timespec now;
  clock_gettime(CLOCK_REALTIME, &now);
  int64_t step = (int64_t)ms - ((int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000);
  if (!opt.dry_power) {
    struct timespec ts = {.tv_sec = (time_t)(ms / 1000), .tv_nsec = (long)(ms % 1000) * 1000000L};
    if (clock_settime(CLOCK_REALTIME, &ts) != 0) {
      send_error(c, true, id, "failed", "clock_settime: %s", strerror(errno));
      return;
    }
    if (step > 1000 || step < -1000) logmsg("clock stepped by %lld ms (set-time)", (long long)step);
  }
  struct jb j;
  begin_ok(&j, id);
  jb_begin_obj(&j);
  jb_key(&j, "stepMs");
  jb_i64(&j, step);
  jb_key(&j, "dryRun");
  jb_bool(&j, opt.dry_power);
  jb_end_obj(&j);
  finish_ok(c, &j, id);
}

static void run_power(enum power action) {
  const char *name = action == PW_POWEROFF ? "poweroff" : "reboot";
  if (opt.dry_power) {
    logmsg("%s requested by the host (dry run: not acting)", name);
    return;
  }
  logmsg("%s requested by the host", name);
  sync();
  if (sd_booted()) {
    pid_t pid = fork();
    if (pid == 0) {
      signal(SIGPIPE, SIG_DFL);
      sigset_t none;
      sigemptyset(&none);
      sigprocmask(SIG_SETMASK, &none, NULL);
      execl("/bin/systemctl", "systemctl", "--no-block", name, (char *)NULL);
      execl("/usr/bin/systemctl", "systemctl", "--no-block", name, (char *)NULL);
      _exit(127);
    }
    if (pid > 0) {
      int status = 0;
      pid_t r;
      do r = waitpid(pid, &status, 0);
      while (r < 0 && errno == EINTR);
      if (r == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0) return;
      /* Killed by a signal: the shutdown it asked for has begun and stopped this
       * service's processes (systemctl included) before it exited. Forcing
       * reboot(2) now would cut that shutdown short, before the disks are
       * unmounted; systemd finishes it. */
      if (r == pid && WIFSIGNALED(status)) {
        logmsg("systemctl %s was stopped by the shutdown it started", name);
        return;
      }
    }
    logmsg("systemctl %s failed; forcing it with reboot(2)", name);
  }
  sync();
  if (reboot(action == PW_POWEROFF ? RB_POWER_OFF : RB_AUTOBOOT) != 0)
    logmsg("reboot(2) failed: %s", strerror(errno));
}

/* grow-fs: grow banger's disk filesystems to their devices (growfs.c). Measures only on Unix-socket transports (tests on a host). */
static void op_grow_fs(struct conn *c, uint64_t id) {
  struct growfs_result res[GROWFS_MOUNTS];
  bool dry = opt.mode == M_UNIX;
  growfs_all(res, dry);
  struct jb j;
  begin_ok(&j, id);
  jb_begin_obj(&j);
  jb_key(&j, "filesystems");
  jb_begin_arr(&j);
  for (int i = 0; i < GROWFS_MOUNTS; i++) {
    jb_begin_obj(&j);
    jb_key(&j, "mount");
    jb_str(&j, res[i].mount);
    jb_key(&j, "mounted");
    jb_bool(&j, res[i].mounted);
    jb_key(&j, "beforeBytes");
    jb_u64(&j, res[i].before);
    jb_key(&j, "afterBytes");
    jb_u64(&j, res[i].after);
    jb_key(&j, "deviceBytes");
    jb_u64(&j, res[i].device);
    jb_key(&j, "error");
    if (res[i].error[0]) jb_str(&j, res[i].error);
    else jb_null(&j);
    jb_end_obj(&j);
  }
  jb_end_arr(&j);
  jb_key(&j, "dryRun");
  jb_bool(&j, dry);
  jb_end_obj(&j);
  finish_ok(c, &j, id);
}

/* At start in a guest: a disk grown while the VM was stopped gets its filesystem grown now. */
static void grow_fs_at_start(void) {
  struct growfs_result res[GROWFS_MOUNTS];
  growfs_all(res, false);
  for (int i = 0; i < GROWFS_MOUNTS; i++) {
    if (res[i].error[0] && res[i].mounted) logmsg("grow-fs: %s", res[i].error);
    else if (res[i].after > res[i].before)
      logmsg("grew %s from %llu to %llu bytes", res[i].mount, (unsigned long long)res[i].before,
             (unsigned long long)res[i].after);
  }
}

static void handle_line(struct conn *c, char *line, size_t len) {
  static struct jreq req;
  char err[200];
  while (len > 0 && (line[len - 1] == '\r' || line[len - 1] == ' ' || line[len - 1] == '\t')) len--;
  size_t k = 0;
  while (k < len && (line[k] == ' ' || line[k] == '\t')) k++;
  if (k == len) return; /* blank line: the host sends one to resync after connecting */

  if (json_parse_flat(line, len, &req, err, sizeof err) < 0) {
    uint64_t id = 0;
    bool has = json_salvage_id(line, len, &id);
    send_error(c, has, id, "bad_request", "%s", err);
    return;
  }
  const struct jfield *f = jreq_get(&req, "id");
  if (!f || f->type != JT_NUM || !(f->num >= 0) || f->num > 9007199254740991.0 ||
      (double)(uint64_t)f->num != f->num) {
    send_error(c, false, 0, "bad_request", "missing or invalid \"id\": expected a non-negative integer");
    return;
  }
  uint64_t id = (uint64_t)f->num;
  f = jreq_get(&req, "op");
  if (!f || f->type != JT_STR) {
    send_error(c, true, id, "bad_request", "missing or invalid \"op\": expected a string");
    return;
  }
  const char *op = f->str;
  if (strcmp(op, "hello") == 0) op_hello(c, id);
  else if (strcmp(op, "wait-ready") == 0) op_wait_ready(c, id, &req);
  else if (strcmp(op, "ports") == 0) op_ports(c, id);
  else if (strcmp(op, "stats") == 0) op_stats(c, id);
  else if (strcmp(op, "poweroff") == 0) op_power(c, id, PW_POWEROFF);
  else if (strcmp(op, "reboot") == 0) op_power(c, id, PW_REBOOT);
  else if (strcmp(op, "set-time") == 0) op_set_time(c, id, &req);
  else if (strcmp(op, "set-identity") == 0) op_set_identity(c, id, &req);
  else if (strcmp(op, "grow-fs") == 0) op_grow_fs(c, id);
  else if (strcmp(op, "sync") == 0) {
    sync();
    struct jb j;
    begin_ok(&j, id);
    jb_begin_obj(&j);
    jb_end_obj(&j);
    finish_ok(c, &j, id);
  } else {
    char known[160] = "";
    for (size_t i = 0; i < N_OPS; i++) {
      strncat(known, i ? ", " : "", sizeof known - strlen(known) - 1);
      strncat(known, k_ops[i], sizeof known - strlen(known) - 1);
    }
    send_error(c, true, id, "unknown_op", "unknown op \"%.64s\" (known: %s)", op, known);
  }
}

/* Handle the complete lines buffered on c, pausing while too much output is queued. */
static void conn_process(struct conn *c) {
  for (;;) {
    if (c->fd < 0 || c->broken || conn_pending(c) > OUT_HIGH) return;
    char *nl = memchr(c->in, '\n', c->inlen);
    if (!nl) break;
    size_t linelen = (size_t)(nl - c->in);
    unsigned gen = c->gen;
    if (c->discarding) c->discarding = false;
    else handle_line(c, c->in, linelen);
    if (c->gen != gen) return; /* session reset while handling */
    memmove(c->in, nl + 1, c->inlen - linelen - 1);
    c->inlen -= linelen + 1;
  }
  if (c->inlen == IN_CAP) {
    if (!c->discarding) {
      uint64_t id = 0;
      bool has = json_salvage_id(c->in, c->inlen, &id);
      send_error(c, has, id, "too_large", "request too large (a request line is limited to %d bytes)", IN_CAP);
      c->discarding = true;
    }
    c->inlen = 0;
  } else if (c->discarding) {
    c->inlen = 0;
  }
}

/* ---------- transports ---------- */

static void set_nonblock_cloexec(int fd) {
  int fl = fcntl(fd, F_GETFL);
  if (fl >= 0) fcntl(fd, F_SETFL, fl | O_NONBLOCK);
  fcntl(fd, F_SETFD, FD_CLOEXEC);
}

static bool path_exists(const char *p) {
  struct stat st;
  return stat(p, &st) == 0;
}

/* Find the char device of the virtio port named `name`, creating the node if needed. */
static int find_vport(const char *name, char *dev, size_t cap) {
  char p[1024];
  snprintf(p, sizeof p, "/dev/virtio-ports/%s", name);
  if (rpath(dev, cap, p) == 0 && path_exists(dev)) return 0; /* udev made a link */

  char cls[1024];
  if (rpath(cls, sizeof cls, "/sys/class/virtio-ports") < 0) return -1;
  DIR *d = opendir(cls);
  if (!d) return -1;
  struct dirent *e;
  int found = -1;
  while (found < 0 && (e = readdir(d)) != NULL) {
    if (e->d_name[0] == '.') continue;
    char f[1400], val[256];
    snprintf(f, sizeof f, "%s/%s/name", cls, e->d_name);
    if (read_small(f, val, sizeof val) <= 0) continue;
    val[strcspn(val, "\r\n")] = '\0';
    if (strcmp(val, name) != 0) continue;
    snprintf(p, sizeof p, "/dev/%s", e->d_name);
    if (rpath(dev, cap, p) < 0) break;
    if (path_exists(dev)) {
      found = 0;
      break;
    }
    /* no devtmpfs/udev node: make one from sysfs `dev` (MAJ:MIN) */
    unsigned maj, min;
    snprintf(f, sizeof f, "%s/%s/dev", cls, e->d_name);
    if (read_small(f, val, sizeof val) <= 0 || sscanf(val, "%u:%u", &maj, &min) != 2) break;
    if (mknod(dev, S_IFCHR | 0600, makedev(maj, min)) == 0 || errno == EEXIST) {
      found = 0;
      break;
    }
    snprintf(p, sizeof p, "/run/banger-agent.%s", e->d_name);
    if (rpath(dev, cap, p) == 0 && (mknod(dev, S_IFCHR | 0600, makedev(maj, min)) == 0 || errno == EEXIST)) found = 0;
    else logmsg("cannot create a device node for %s (%u:%u): %s", e->d_name, maj, min, strerror(errno));
  }
  closedir(d);
  return found;
}

static bool open_serial(bool quiet) {
  static int last_open_errno;
  char dev[512];
  if (find_vport(opt.port_name, dev, sizeof dev) < 0) {
    if (!quiet) logmsg("no virtio port named %s yet", opt.port_name);
    return false;
  }
  int fd;
  do fd = open(dev, O_RDWR | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
  while (fd < 0 && errno == EINTR);
  if (fd < 0) {
    /* e.g. EBUSY while another process holds the port: say so once per distinct error */
    if (errno != last_open_errno) logmsg("cannot open %s: %s; retrying", dev, strerror(errno));
    last_open_errno = errno;
    return false;
  }
  last_open_errno = 0;
  struct conn *c = NULL;
  for (int i = 0; i < MAX_CONNS; i++)
    if (g_conns[i].kind == CK_SERIAL) c = &g_conns[i];
  if (!c) c = conn_new(CK_SERIAL, -1);
  if (!c) {
    close(fd);
    return false;
  }
  c->fd = fd;
  c->host_state = -1;
  snprintf(c->path, sizeof c->path, "%s", dev);
  snprintf(g_serial_dev, sizeof g_serial_dev, "%s", dev);
  g_transport = "virtio-serial";
  return true;
}

static bool serial_open(void) {
  for (int i = 0; i < MAX_CONNS; i++)
    if (g_conns[i].kind == CK_SERIAL && g_conns[i].fd >= 0) return true;
  return false;
}

static bool vsock_device_present(void) {
  char dir[1024];
  if (rpath(dir, sizeof dir, "/sys/bus/virtio/devices") < 0) return false;
  DIR *d = opendir(dir);
  if (!d) return false;
  struct dirent *e;
  bool found = false;
  while (!found && (e = readdir(d)) != NULL) {
    if (e->d_name[0] == '.') continue;
    char f[1400], val[32];
    snprintf(f, sizeof f, "%s/%s/device", dir, e->d_name);
    if (read_small(f, val, sizeof val) > 0 && strtoul(val, NULL, 0) == 19) found = true; /* VIRTIO_ID_VSOCK */
  }
  closedir(d);
  return found;
}

static bool listen_vsock(bool quiet) {
  int fd = socket(AF_VSOCK, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) {
    if (!quiet) logmsg("vsock unavailable: %s", strerror(errno));
    return false;
  }
  struct sockaddr_vm_ sa;
  memset(&sa, 0, sizeof sa);
  sa.svm_family = AF_VSOCK;
  sa.svm_port = opt.vsock_port;
  sa.svm_cid = VMADDR_CID_ANY_;
  if (bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0 || listen(fd, 8) != 0) {
    if (!quiet) logmsg("cannot listen on vsock port %u: %s", opt.vsock_port, strerror(errno));
    close(fd);
    return false;
  }
  g_vsock_lfd = fd;
  g_transport = "vsock";
  return true;
}

static int listen_unix(const char *path) {
  struct sockaddr_un sa;
  memset(&sa, 0, sizeof sa);
  sa.sun_family = AF_UNIX;
  if (strlen(path) >= sizeof sa.sun_path) {
    logmsg("socket path too long: %s", path);
    return -1;
  }
  strcpy(sa.sun_path, path);
  struct stat st;
  if (lstat(path, &st) == 0 && S_ISSOCK(st.st_mode)) unlink(path);
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0 || listen(fd, 8) != 0) {
    logmsg("cannot listen on %s: %s", path, strerror(errno));
    if (fd >= 0) close(fd);
    return -1;
  }
  return fd;
}

static void dial(struct conn *c, int64_t now) {
  struct sockaddr_un sa;
  memset(&sa, 0, sizeof sa);
  sa.sun_family = AF_UNIX;
  snprintf(sa.sun_path, sizeof sa.sun_path, "%s", c->path);
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int r = -1;
  if (fd >= 0) {
    do r = connect(fd, (struct sockaddr *)&sa, sizeof sa);
    while (r < 0 && errno == EINTR);
  }
  if (r != 0) {
    int e = errno;
    if (fd >= 0) close(fd);
    if (c->host_state != 0) logmsg("cannot connect to %s: %s; retrying", c->path, strerror(e));
    c->host_state = 0;
    c->retry_at = now + DIAL_RETRY_MS;
    return;
  }
  set_nonblock_cloexec(fd);
  c->fd = fd;
  c->host_state = 1;
  logmsg("connected to %s", c->path);
}

/* Bring up whatever transports are configured and not up yet. */
static int64_t g_next_probe;
static bool g_probe_logged, g_started;

static void probe_transports(int64_t now) {
  if (now < g_next_probe) return;
  g_next_probe = now + PROBE_MS;
  /* the first probe runs before the "started" line, which reports its outcome */
  bool quiet = g_probe_logged || !g_started;
  switch (opt.mode) {
  case M_SERIAL:
    if (!serial_open() && open_serial(quiet) && g_started) logmsg("transport virtio-serial %s", g_serial_dev);
    break;
  case M_VSOCK:
    if (g_vsock_lfd < 0 && listen_vsock(quiet) && g_started) logmsg("transport vsock port %u", opt.vsock_port);
    break;
  case M_AUTO:
    if (serial_open() || g_vsock_lfd >= 0) break;
    if (open_serial(true)) {
      if (g_started) logmsg("transport virtio-serial %s", g_serial_dev);
    } else if (vsock_device_present() && listen_vsock(quiet)) {
      if (g_started) logmsg("transport vsock port %u", opt.vsock_port);
    } else if (!quiet) {
      logmsg("waiting for a virtio port named %s or a vsock device", opt.port_name);
    }
    break;
  case M_UNIX:
    break;
  }
  if (g_started) g_probe_logged = true;
}

static bool transport_pending(void) {
  switch (opt.mode) {
  case M_SERIAL: return !serial_open();
  case M_VSOCK: return g_vsock_lfd < 0;
  case M_AUTO: return !serial_open() && g_vsock_lfd < 0;
  default: return false;
  }
}

static void accept_all(int lfd) {
  for (;;) {
    int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR) continue;
      return; /* EAGAIN, or a transient error */
    }
    if (!conn_new(CK_CLIENT, fd)) {
      logmsg("too many host connections (at most %d); closing a new one", MAX_CONNS);
      close(fd);
    }
  }
}

/* A read/write failed or hit EOF: what that means depends on the transport. */
static void conn_lost(struct conn *c, int64_t now, int err) {
  switch (c->kind) {
  case CK_SERIAL:
    if (err == 0) { /* EOF / POLLHUP: the host side is not connected */
      if (c->host_state == 1) logmsg("host disconnected from %s", c->path);
      c->host_state = 0;
      conn_reset_session(c);
      c->retry_at = now + SERIAL_BACKOFF_MS;
    } else {
      logmsg("%s failed: %s; reopening", c->path, strerror(err));
      conn_close_fd(c);
    }
    break;
  case CK_DIAL:
    logmsg("connection to %s closed%s%s; reconnecting", c->path, err ? ": " : "", err ? strerror(err) : "");
    conn_close_fd(c);
    c->host_state = 0;
    c->retry_at = now + DIAL_RETRY_MS;
    break;
  case CK_CLIENT:
    conn_free(c);
    break;
  case CK_FREE:
    break;
  }
}

static void conn_read(struct conn *c, int64_t now) {
  for (int rounds = 0; rounds < 16; rounds++) {
    if (c->fd < 0 || c->broken || conn_pending(c) > OUT_HIGH) return;
    ssize_t r = read(c->fd, c->in + c->inlen, IN_CAP - c->inlen);
    if (r > 0) {
      c->inlen += (size_t)r;
      conn_process(c);
      continue;
    }
    if (r < 0 && errno == EINTR) continue;
    if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
    conn_lost(c, now, r == 0 ? 0 : errno);
    return;
  }
}

static void on_signal(int sig) {
  (void)sig;
  g_stop = 1;
}

/* ---------- main ---------- */

static void usage(FILE *f) {
  fprintf(f,
          "usage: banger-agent [options]\n"
          "  --transport auto|virtio-serial|vsock  channel to the host (default auto)\n"
          "  --port-name NAME       virtio-serial port name (default banger.agent)\n"
          "  --vsock-port N         vsock port to listen on (default 52, privileged)\n"
          "  --listen-unix PATH     listen on a Unix socket (tests)\n"
          "  --connect-unix PATH    connect to a Unix socket, reconnecting (tests)\n"
          "  --root DIR             read /proc, /sys, /etc, /dev, /run below DIR (tests)\n"
          "  --ssh-port N           port whose LISTEN state means ready (default 22)\n"
          "  --ready-poll-ms N      readiness poll interval (default 100)\n"
          "  --dry-run-power        answer poweroff/reboot/set-time but do nothing\n"
          "  --allow-power          act on poweroff/reboot/set-time even on Unix-socket transports\n"
          "  --openssh-release FILE print the OpenSSH release FILE carries (major*100+minor, -1: none)\n"
          "  --version\n");
}

static unsigned parse_uint(const char *flag, const char *v, unsigned lo, unsigned hi) {
  char *end;
  unsigned long n = strtoul(v, &end, 10);
  if (!*v || *end || n < lo || n > hi) {
    fprintf(stderr, "banger-agent: %s: expected a number from %u to %u, got '%s'\n", flag, lo, hi, v);
    exit(2);
  }
  return (unsigned)n;
}

static void parse_args(int argc, char **argv) {
  bool allow_power = false, dry = false;
  for (int i = 1; i < argc; i++) {
    char flag[64];
    const char *a = argv[i], *val = NULL, *eq = strchr(a, '=');
    if (eq && strncmp(a, "--", 2) == 0 && (size_t)(eq - a) < sizeof flag) {
      memcpy(flag, a, (size_t)(eq - a));
      flag[eq - a] = '\0';
      val = eq + 1;
    } else {
      snprintf(flag, sizeof flag, "%s", a);
    }
#define VALUE() (val ? val : (i + 1 < argc ? argv[++i] : (fprintf(stderr, "banger-agent: %s needs a value\n", flag), exit(2), "")))
    if (strcmp(flag, "--help") == 0 || strcmp(flag, "-h") == 0) {
      usage(stdout);
      exit(0);
    } else if (strcmp(flag, "--version") == 0) {
      printf("banger-agent %s (protocol %d)\n", BANGER_AGENT_VERSION, PROTOCOL_VERSION);
      exit(0);
    } else if (strcmp(flag, "--openssh-release") == 0) {
      /* what set-identity reads from the listening sshd's binary (tests, diagnosis) */
      printf("%d\n", openssh_release(VALUE()));
      exit(0);
    } else if (strcmp(flag, "--transport") == 0) {
      const char *t = VALUE();
      if (strcmp(t, "auto") == 0) opt.mode = M_AUTO;
      else if (strcmp(t, "virtio-serial") == 0) opt.mode = M_SERIAL;
      else if (strcmp(t, "vsock") == 0) opt.mode = M_VSOCK;
      else {
        fprintf(stderr, "banger-agent: --transport: expected auto, virtio-serial or vsock, got '%s'\n", t);
        exit(2);
      }
    } else if (strcmp(flag, "--port-name") == 0) {
      opt.port_name = VALUE();
    } else if (strcmp(flag, "--vsock-port") == 0) {
      opt.vsock_port = parse_uint(flag, VALUE(), 1, 0xFFFFFFFEu);
    } else if (strcmp(flag, "--listen-unix") == 0) {
      opt.listen_unix = VALUE();
    } else if (strcmp(flag, "--connect-unix") == 0) {
      opt.connect_unix = VALUE();
    } else if (strcmp(flag, "--root") == 0) {
      const char *r = VALUE();
      size_t n = strlen(r);
      while (n > 0 && r[n - 1] == '/') n--;
      if (n >= sizeof g_root) {
        fprintf(stderr, "banger-agent: --root: path too long\n");
        exit(2);
      }
      memcpy(g_root, r, n);
      g_root[n] = '\0';
    } else if (strcmp(flag, "--ssh-port") == 0) {
      opt.ssh_port = parse_uint(flag, VALUE(), 1, 65535);
    } else if (strcmp(flag, "--ready-poll-ms") == 0) {
      opt.ready_poll_ms = (int)parse_uint(flag, VALUE(), 10, 10000);
    } else if (strcmp(flag, "--dry-run-power") == 0) {
      dry = true;
    } else if (strcmp(flag, "--allow-power") == 0) {
      allow_power = true;
    } else {
      fprintf(stderr, "banger-agent: unknown option '%s' (see --help)\n", a);
      exit(2);
    }
#undef VALUE
  }
  if (opt.listen_unix || opt.connect_unix) opt.mode = M_UNIX;
  /* Unix-socket transports are for tests on a host: never power it off by accident. */
  opt.dry_power = dry || (opt.mode == M_UNIX && !allow_power);
}

int main(int argc, char **argv) {
  parse_args(argc, argv);

  signal(SIGPIPE, SIG_IGN);
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGINT, &sa, NULL);
  /* keep them blocked except inside ppoll, so a stop request is never missed */
  sigset_t block, waitmask;
  sigemptyset(&block);
  sigaddset(&block, SIGTERM);
  sigaddset(&block, SIGINT);
  sigprocmask(SIG_BLOCK, &block, &waitmask);
  sigdelset(&waitmask, SIGTERM);
  sigdelset(&waitmask, SIGINT);

  char desc[700];
  if (opt.mode == M_UNIX) {
    g_transport = "unix";
    int n = 0;
    desc[0] = '\0';
    if (opt.listen_unix) {
      g_unix_lfd = listen_unix(opt.listen_unix);
      if (g_unix_lfd < 0) return 1;
      n += snprintf(desc + n, sizeof desc - (size_t)n, "transport unix listen %s", opt.listen_unix);
    }
    if (opt.connect_unix) {
      struct conn *c = conn_new(CK_DIAL, -1);
      if (!c) return 1;
      snprintf(c->path, sizeof c->path, "%s", opt.connect_unix);
      c->host_state = -1;
      snprintf(desc + n, sizeof desc - (size_t)n, "%sunix connect %s", n ? ", " : "transport ", opt.connect_unix);
    }
  } else {
    grow_fs_at_start();
    probe_transports(mono_ms());
    if (serial_open()) snprintf(desc, sizeof desc, "transport virtio-serial %s", g_serial_dev);
    else if (g_vsock_lfd >= 0) snprintf(desc, sizeof desc, "transport vsock port %u", opt.vsock_port);
    else if (opt.mode == M_VSOCK) snprintf(desc, sizeof desc, "no transport yet: waiting for vsock");
    else snprintf(desc, sizeof desc, "no transport yet: waiting for a virtio port named %s%s", opt.port_name,
                  opt.mode == M_AUTO ? " or a vsock device" : "");
  }
  logmsg("started (version %s, protocol %d, pid %d, %s%s)", BANGER_AGENT_VERSION, PROTOCOL_VERSION,
         (int)getpid(), desc, opt.dry_power ? ", power actions disabled" : "");
  g_started = true;
  g_probe_logged = true; /* the line above already said what we wait for */

  int64_t started = mono_ms(), next_ready_check = 0;
  while (!g_stop) {
    int64_t now = mono_ms();
    if (transport_pending()) probe_transports(now);

    for (int i = 0; i < MAX_CONNS; i++) {
      struct conn *c = &g_conns[i];
      if (c->kind == CK_DIAL && c->fd < 0 && now >= c->retry_at) dial(c, now);
    }

    if ((!g_ready_seen || g_nwaiters > 0) && now >= next_ready_check) {
      /* poll fast while a boot is plausible; an image without sshd shouldn't cost much forever */
      next_ready_check = now + (now - started < READY_FAST_WINDOW_MS || g_nwaiters > 0 ? opt.ready_poll_ms : 1000);
      if (check_ready() && g_nwaiters > 0) answer_waiters();
    }
    if (g_nwaiters > 0) expire_waiters(now);

    if (g_power.action != PW_NONE) {
      struct conn *c = &g_conns[g_power.conn];
      bool flushed = c->kind == CK_FREE || c->gen != g_power.gen || c->fd < 0 || conn_pending(c) == 0;
      if (flushed || now >= g_power.deadline) {
        enum power a = g_power.action;
        run_power(a);
        g_power.action = PW_NONE;
      }
    }

    /* handle failures recorded by writes during the steps above */
    for (int i = 0; i < MAX_CONNS; i++)
      if (g_conns[i].kind != CK_FREE && g_conns[i].broken) conn_lost(&g_conns[i], now, g_conns[i].broken);

    struct pollfd pfd[MAX_CONNS + 2];
    int who[MAX_CONNS + 2]; /* conn index, or -1 unix listener, -2 vsock listener */
    int np = 0;
    int64_t next = INT64_MAX;
    if (g_unix_lfd >= 0) {
      pfd[np] = (struct pollfd){g_unix_lfd, POLLIN, 0};
      who[np++] = -1;
    }
    if (g_vsock_lfd >= 0) {
      pfd[np] = (struct pollfd){g_vsock_lfd, POLLIN, 0};
      who[np++] = -2;
    }
    for (int i = 0; i < MAX_CONNS; i++) {
      struct conn *c = &g_conns[i];
      if (c->kind == CK_FREE) continue;
      if (c->fd < 0) {
        if (c->kind == CK_DIAL && c->retry_at < next) next = c->retry_at;
        continue;
      }
      if (c->kind == CK_SERIAL && c->host_state == 0 && now < c->retry_at) {
        /* host not connected: the port reports POLLHUP nonstop, so look again later */
        if (c->retry_at < next) next = c->retry_at;
        continue;
      }
      short ev = 0;
      if (conn_pending(c) <= OUT_HIGH && c->inlen < IN_CAP) ev |= POLLIN;
      if (conn_pending(c) > 0) ev |= POLLOUT;
      pfd[np] = (struct pollfd){c->fd, ev, 0};
      who[np++] = i;
    }
    if (transport_pending() && g_next_probe < next) next = g_next_probe;
    if ((!g_ready_seen || g_nwaiters > 0) && next_ready_check < next) next = next_ready_check;
    for (int i = 0; i < MAX_WAITERS; i++)
      if (g_waiters[i].used && g_waiters[i].deadline >= 0 && g_waiters[i].deadline < next) next = g_waiters[i].deadline;
    if (g_power.action != PW_NONE && g_power.deadline < next) next = g_power.deadline;

    struct timespec ts, *tsp = NULL;
    if (next != INT64_MAX) {
      int64_t ms = next - now;
      if (ms < 0) ms = 0;
      ts.tv_sec = (time_t)(ms / 1000);
      ts.tv_nsec = (long)(ms % 1000) * 1000000L;
      tsp = &ts;
    }
    int r = ppoll(pfd, (nfds_t)np, tsp, &waitmask);
    if (r < 0) {
      if (errno == EINTR) continue;
      logmsg("poll failed: %s", strerror(errno));
      sleep(1);
      continue;
    }
    now = mono_ms();
    for (int k = 0; k < np; k++) {
      short re = pfd[k].revents;
      if (who[k] == -1) {
        if (re & POLLIN) accept_all(g_unix_lfd);
        continue;
      }
      if (who[k] == -2) {
        if (re & POLLIN) accept_all(g_vsock_lfd);
        continue;
      }
      struct conn *c = &g_conns[who[k]];
      if (c->kind == CK_FREE || c->fd != pfd[k].fd) continue;
      if (c->kind == CK_SERIAL) {
        if (re & (POLLERR | POLLNVAL)) {
          conn_lost(c, now, (re & POLLNVAL) ? EBADF : EIO);
          continue;
        }
        if (!(re & POLLHUP) && c->host_state != 1) {
          if (c->host_state == 0 || c->host_state == -1) logmsg("host connected to %s", c->path);
          c->host_state = 1;
        }
        if (re & POLLIN) conn_read(c, now);
        if (c->fd >= 0 && (re & POLLOUT)) conn_flush(c);
        if (c->fd >= 0 && (re & POLLHUP)) conn_lost(c, now, 0);
      } else {
        if (re & (POLLIN | POLLHUP | POLLERR)) conn_read(c, now);
        if (c->kind != CK_FREE && c->fd >= 0 && (re & POLLOUT)) conn_flush(c);
        if (c->kind != CK_FREE && c->fd >= 0 && (re & POLLNVAL)) conn_lost(c, now, EBADF);
      }
      if (c->kind != CK_FREE && c->broken) conn_lost(c, now, c->broken);
      /* lines left waiting behind backpressure can go now that output drained */
      if (c->kind != CK_FREE && c->fd >= 0 && conn_pending(c) <= OUT_HIGH && memchr(c->in, '\n', c->inlen))
        conn_process(c);
    }
  }

  logmsg("stopping");
  if (g_unix_lfd >= 0 && opt.listen_unix) unlink(opt.listen_unix);
  return 0;
}
