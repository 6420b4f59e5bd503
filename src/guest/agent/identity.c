/* The "set-identity" op: see identity.h. */
#include "identity.h"
#include "sysinfo.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <net/route.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* <linux/random.h> is not part of musl: the two ioctls of random(4). */
#define RNDADDENTROPY_ _IOW('R', 0x03, int[2])
#define RNDRESEEDCRNG_ _IO('R', 0x07)
#ifndef ARPHRD_ETHER
#define ARPHRD_ETHER 1
#endif

/* How long sshd may take to listen again after SIGHUP (it re-executes itself). */
#define SSHD_RELOAD_MS 20000

static int fail(char *err, size_t cap, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(char *err, size_t cap, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err, cap, fmt, ap);
  va_end(ap);
  return -1;
}

static int hexval(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

bool parse_hex(const char *s, unsigned char *out, size_t n) {
  if (strlen(s) != 2 * n) return false;
  for (size_t i = 0; i < n; i++) {
    int hi = hexval(s[2 * i]), lo = hexval(s[2 * i + 1]);
    if (hi < 0 || lo < 0) return false;
    out[i] = (unsigned char)(hi << 4 | lo);
  }
  return true;
}

bool parse_mac(const char *s, unsigned char out[6]) {
  if (strlen(s) != 17) return false;
  for (int i = 0; i < 6; i++) {
    if (i < 5 && s[3 * i + 2] != ':') return false;
    int hi = hexval(s[3 * i]), lo = hexval(s[3 * i + 1]);
    if (hi < 0 || lo < 0) return false;
    out[i] = (unsigned char)(hi << 4 | lo);
  }
  return true;
}

bool parse_ipv4(const char *s, uint32_t *out) {
  struct in_addr a;
  if (inet_pton(AF_INET, s, &a) != 1) return false;
  *out = a.s_addr;
  return true;
}

bool valid_hostname(const char *s) {
  size_t n = strlen(s);
  if (n == 0 || n > 64 || s[0] == '-') return false;
  for (size_t i = 0; i < n; i++) {
    char c = s[i];
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-')) return false;
  }
  return true;
}

/* Write text to p (a path under g_root, shown as path in errors) and set its mode. */
static int write_text(const char *p, const char *path, int oflags, const char *text, mode_t mode, char *err,
                      size_t cap) {
  int fd = open(p, O_WRONLY | O_CREAT | O_CLOEXEC | oflags, mode);
  if (fd < 0) return fail(err, cap, "write %s: %s", path, strerror(errno));
  size_t len = strlen(text), off = 0;
  while (off < len) {
    ssize_t w = write(fd, text + off, len - off);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0) {
      int e = errno;
      close(fd);
      return fail(err, cap, "write %s: %s", path, strerror(e));
    }
    off += (size_t)w;
  }
  fchmod(fd, mode);
  close(fd);
  return 0;
}

/* Replace a file's content (in place: /etc/machine-id may be a bind mount). */
static int write_rooted(const char *path, const char *text, mode_t mode, char *err, size_t cap) {
  char p[1024];
  if (rpath(p, sizeof p, path) < 0) return fail(err, cap, "%s: path too long", path);
  chmod(p, 0644); /* a read-only machine-id is still replaced (root could anyway) */
  return write_text(p, path, O_TRUNC, text, mode, err, cap);
}

static int set_clock(double time_ms, char *err, size_t cap) {
  struct timespec ts;
  ts.tv_sec = (time_t)(time_ms / 1000);
  ts.tv_nsec = (long)((time_ms - (double)ts.tv_sec * 1000) * 1e6);
  if (ts.tv_nsec < 0) ts.tv_nsec = 0;
  if (ts.tv_nsec > 999999999) ts.tv_nsec = 999999999;
  if (clock_settime(CLOCK_REALTIME, &ts) != 0) return fail(err, cap, "set the clock: %s", strerror(errno));
  return 0;
}

static int add_entropy(const unsigned char *bytes, char *err, size_t cap) {
  struct {
    int entropy_count;
    int buf_size;
    unsigned char buf[IDENTITY_ENTROPY_BYTES];
  } info;
  info.entropy_count = IDENTITY_ENTROPY_BYTES * 8;
  info.buf_size = IDENTITY_ENTROPY_BYTES;
  memcpy(info.buf, bytes, IDENTITY_ENTROPY_BYTES);
  int fd = open("/dev/random", O_WRONLY | O_CLOEXEC);
  if (fd < 0) return fail(err, cap, "open /dev/random: %s", strerror(errno));
  int rc = ioctl(fd, RNDADDENTROPY_, &info);
  int e = errno;
  if (rc == 0) {
    rc = ioctl(fd, RNDRESEEDCRNG_);
    e = errno;
    if (rc != 0) {
      close(fd);
      return fail(err, cap, "reseed the kernel CRNG (RNDRESEEDCRNG): %s", strerror(e));
    }
  }
  close(fd);
  memset(&info, 0, sizeof info);
  if (rc != 0) return fail(err, cap, "add entropy (RNDADDENTROPY): %s", strerror(e));
  return 0;
}

static int set_network(const struct identity *id, char *err, size_t cap) {
  int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (s < 0) return fail(err, cap, "socket: %s", strerror(errno));
  struct ifreq ifr;
  memset(&ifr, 0, sizeof ifr);
  snprintf(ifr.ifr_name, sizeof ifr.ifr_name, "%s", id->iface);
  int rc = -1;
  if (ioctl(s, SIOCGIFFLAGS, &ifr) != 0) {
    fail(err, cap, "%s: read flags: %s", id->iface, strerror(errno));
    goto out;
  }
  short flags = ifr.ifr_flags;
  /* The MAC changes while the link is down (virtio-net takes it either way). */
  ifr.ifr_flags = (short)(flags & ~IFF_UP);
  if (ioctl(s, SIOCSIFFLAGS, &ifr) != 0) {
    fail(err, cap, "%s: link down: %s", id->iface, strerror(errno));
    goto out;
  }
  struct ifreq hw;
  memset(&hw, 0, sizeof hw);
  snprintf(hw.ifr_name, sizeof hw.ifr_name, "%s", id->iface);
  hw.ifr_hwaddr.sa_family = ARPHRD_ETHER;
  memcpy(hw.ifr_hwaddr.sa_data, id->mac, 6);
  if (ioctl(s, SIOCSIFHWADDR, &hw) != 0) {
    fail(err, cap, "%s: set MAC: %s", id->iface, strerror(errno));
    goto out;
  }
  struct ifreq a;
  memset(&a, 0, sizeof a);
  snprintf(a.ifr_name, sizeof a.ifr_name, "%s", id->iface);
  struct sockaddr_in *sin = (struct sockaddr_in *)&a.ifr_addr;
  sin->sin_family = AF_INET;
  sin->sin_addr.s_addr = id->ip;
  if (ioctl(s, SIOCSIFADDR, &a) != 0) {
    fail(err, cap, "%s: set address: %s", id->iface, strerror(errno));
    goto out;
  }
  sin = (struct sockaddr_in *)&a.ifr_netmask;
  sin->sin_family = AF_INET;
  sin->sin_addr.s_addr = id->prefix == 0 ? 0 : htonl(0xFFFFFFFFu << (32 - id->prefix));
  if (ioctl(s, SIOCSIFNETMASK, &a) != 0) {
    fail(err, cap, "%s: set netmask: %s", id->iface, strerror(errno));
    goto out;
  }
  ifr.ifr_flags = (short)(flags | IFF_UP);
  if (ioctl(s, SIOCSIFFLAGS, &ifr) != 0) {
    fail(err, cap, "%s: link up: %s", id->iface, strerror(errno));
    goto out;
  }
  struct rtentry rt;
  memset(&rt, 0, sizeof rt);
  ((struct sockaddr_in *)&rt.rt_dst)->sin_family = AF_INET;
  ((struct sockaddr_in *)&rt.rt_genmask)->sin_family = AF_INET;
  struct sockaddr_in *gw = (struct sockaddr_in *)&rt.rt_gateway;
  gw->sin_family = AF_INET;
  gw->sin_addr.s_addr = id->gateway;
  rt.rt_flags = RTF_UP | RTF_GATEWAY;
  char dev[IFNAMSIZ];
  snprintf(dev, sizeof dev, "%s", id->iface);
  rt.rt_dev = dev;
  if (ioctl(s, SIOCADDRT, &rt) != 0 && errno != EEXIST) {
    fail(err, cap, "%s: add the default route: %s", id->iface, strerror(errno));
    goto out;
  }
  rc = 0;
out:
  close(s);
  return rc;
}

/* Run argv (absolute path first, then PATH) and wait; 0 when it exited 0. */
static int run_wait(const char *const *argv) {
  pid_t pid = fork();
  if (pid < 0) return -1;
  if (pid == 0) {
    signal(SIGPIPE, SIG_DFL);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    int devnull = open("/dev/null", O_RDWR);
    if (devnull >= 0) {
      dup2(devnull, STDIN_FILENO);
      dup2(devnull, STDOUT_FILENO);
    }
    execv(argv[0], (char *const *)argv);
    const char *base = strrchr(argv[0], '/');
    execvp(base ? base + 1 : argv[0], (char *const *)argv);
    _exit(127);
  }
  int status = 0;
  pid_t r;
  do r = waitpid(pid, &status, 0);
  while (r < 0 && errno == EINTR);
  return r == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : -1;
}

/* ---------- the host's ed25519 key, in OpenSSH's own file format ---------- */

#define ED25519_NAME "ssh-ed25519"
#define ED25519_NAME_LEN (sizeof ED25519_NAME - 1)
/* string "ssh-ed25519", string pub */
#define ED25519_BLOB_LEN (4 + ED25519_NAME_LEN + 4 + IDENTITY_ED25519_BYTES)
/* two check ints, the blob's fields, string seed||pub, string comment (""), padding to 8 */
#define ED25519_PRIV_LEN ((8 + ED25519_BLOB_LEN + 4 + 2 * IDENTITY_ED25519_BYTES + 4 + 7) / 8 * 8)
#define OPENSSH_MAGIC "openssh-key-v1" /* written with its NUL */
/* magic, string cipher "none", string kdf "none", string kdf options "", one key, string blob, string private */
#define ED25519_FILE_LEN \
  (sizeof OPENSSH_MAGIC + 8 + 8 + 4 + 4 + 4 + ED25519_BLOB_LEN + 4 + ED25519_PRIV_LEN)
#define B64_LEN(n) (((n) + 2) / 3 * 4)
#define PEM_BEGIN "-----BEGIN OPENSSH PRIVATE KEY-----\n"
#define PEM_END "-----END OPENSSH PRIVATE KEY-----\n"
#define PEM_COLUMNS 70

static size_t put_u32(unsigned char *b, size_t o, uint32_t v) {
  b[o] = (unsigned char)(v >> 24);
  b[o + 1] = (unsigned char)(v >> 16);
  b[o + 2] = (unsigned char)(v >> 8);
  b[o + 3] = (unsigned char)v;
  return o + 4;
}

/* An SSH "string": its 32-bit big-endian length, then its bytes. */
static size_t put_str(unsigned char *b, size_t o, const void *s, size_t n) {
  o = put_u32(b, o, (uint32_t)n);
  if (n) memcpy(b + o, s, n);
  return o + n;
}

/* Standard base64 with padding into out (B64_LEN(n) + 1 bytes); returns its length. */
static size_t base64(const unsigned char *in, size_t n, char *out) {
  static const char abc[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  size_t o = 0;
  for (size_t i = 0; i < n; i += 3) {
    uint32_t v = (uint32_t)in[i] << 16;
    if (i + 1 < n) v |= (uint32_t)in[i + 1] << 8;
    if (i + 2 < n) v |= in[i + 2];
    out[o++] = abc[v >> 18 & 63];
    out[o++] = abc[v >> 12 & 63];
    out[o++] = i + 1 < n ? abc[v >> 6 & 63] : '=';
    out[o++] = i + 2 < n ? abc[v & 63] : '=';
  }
  out[o] = 0;
  return o;
}

/*
 * Install the ed25519 host key the host made (seed and public key) as
 * ssh-keygen would have written it, without running ssh-keygen (~170 ms
 * under emulation): the private key in the unencrypted "openssh-key-v1"
 * format (0600), the public one as "ssh-ed25519 <base64>" (0644), each
 * written under a temporary name and renamed into place. The host is trusted
 * to send a matching pair (sshd uses the public half as it is).
 */
static int install_ed25519(const struct identity *id, char *err, size_t cap) {
  unsigned char blob[ED25519_BLOB_LEN], priv[ED25519_PRIV_LEN], file[ED25519_FILE_LEN];
  char b64[B64_LEN(ED25519_FILE_LEN) + 1];
  char text[sizeof PEM_BEGIN + B64_LEN(ED25519_FILE_LEN) + B64_LEN(ED25519_FILE_LEN) / PEM_COLUMNS + 1 +
            sizeof PEM_END];
  char pubtext[sizeof ED25519_NAME + B64_LEN(ED25519_BLOB_LEN) + 2];

  size_t nb = put_str(blob, 0, ED25519_NAME, ED25519_NAME_LEN);
  nb = put_str(blob, nb, id->ed25519_pub, IDENTITY_ED25519_BYTES);
  memcpy(pubtext, ED25519_NAME " ", ED25519_NAME_LEN + 1);
  size_t pl = ED25519_NAME_LEN + 1 + base64(blob, nb, pubtext + ED25519_NAME_LEN + 1);
  pubtext[pl] = '\n';
  pubtext[pl + 1] = 0;

  /* the check ints only tell a wrong passphrase; any value will do when getrandom cannot answer */
  uint32_t check;
  if (getrandom(&check, sizeof check, GRND_NONBLOCK) != (ssize_t)sizeof check)
    check = (uint32_t)mono_ms() ^ (uint32_t)getpid() << 16;
  size_t np = put_u32(priv, 0, check);
  np = put_u32(priv, np, check);
  memcpy(priv + np, blob, nb);
  np += nb;
  np = put_u32(priv, np, 2 * IDENTITY_ED25519_BYTES);
  memcpy(priv + np, id->ed25519_seed, IDENTITY_ED25519_BYTES);
  memcpy(priv + np + IDENTITY_ED25519_BYTES, id->ed25519_pub, IDENTITY_ED25519_BYTES);
  np += 2 * IDENTITY_ED25519_BYTES;
  np = put_str(priv, np, "", 0);
  for (unsigned char pad = 1; np % 8 != 0; pad++) priv[np++] = pad;

  size_t nf = sizeof OPENSSH_MAGIC;
  memcpy(file, OPENSSH_MAGIC, nf);
  nf = put_str(file, nf, "none", 4);
  nf = put_str(file, nf, "none", 4);
  nf = put_str(file, nf, "", 0);
  nf = put_u32(file, nf, 1);
  nf = put_str(file, nf, blob, nb);
  nf = put_str(file, nf, priv, np);

  size_t len = base64(file, nf, b64), n = strlen(PEM_BEGIN);
  memcpy(text, PEM_BEGIN, n);
  for (size_t i = 0; i < len; i += PEM_COLUMNS) {
    size_t k = len - i < PEM_COLUMNS ? len - i : PEM_COLUMNS;
    memcpy(text + n, b64 + i, k);
    n += k;
    text[n++] = '\n';
  }
  memcpy(text + n, PEM_END, sizeof PEM_END); /* with its NUL */

  static const char rel[] = "/etc/ssh/ssh_host_ed25519_key", reltmp[] = "/etc/ssh/ssh_host_ed25519_key.new";
  char key[1024], tmp[1100], pub[1100], tmppub[1200];
  int rc = -1;
  if (rpath(key, sizeof key, rel) < 0) {
    fail(err, cap, "%s: path too long", rel);
    goto out;
  }
  snprintf(tmp, sizeof tmp, "%s.new", key);
  snprintf(pub, sizeof pub, "%s.pub", key);
  snprintf(tmppub, sizeof tmppub, "%s.pub", tmp);
  unlink(tmp);
  unlink(tmppub);
  /* O_EXCL: the private key is never in a file anyone else could have opened */
  if (write_text(tmp, reltmp, O_EXCL, text, 0600, err, cap) < 0 ||
      write_text(tmppub, "/etc/ssh/ssh_host_ed25519_key.new.pub", O_EXCL, pubtext, 0644, err, cap) < 0) {
    unlink(tmp);
    unlink(tmppub);
    goto out;
  }
  if (rename(tmp, key) != 0 || rename(tmppub, pub) != 0) {
    fail(err, cap, "install the new ed25519 host key: %s", strerror(errno));
    unlink(tmp);
    unlink(tmppub);
    goto out;
  }
  rc = 0;
out:
  explicit_bzero(priv, sizeof priv);
  explicit_bzero(file, sizeof file);
  explicit_bzero(b64, sizeof b64);
  explicit_bzero(text, sizeof text);
  return rc;
}

/*
 * New host keys, as the guest contract makes them at first boot (ssh-keygen,
 * no passphrase, empty comment): ed25519 always (the host's key when it sent
 * one), and any other type the image already has. Each is made under a
 * temporary name and renamed into place.
 */
static int regenerate_host_keys(const struct identity *id, char *err, size_t cap) {
  static const char *const types[] = {"ed25519", "ecdsa", "rsa"};
  for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
    if (i == 0 && id->have_ed25519) {
      if (install_ed25519(id, err, cap) < 0) return -1;
      continue;
    }
    char key[1024], tmp[1100], pub[1100], tmppub[1200];
    char rel[64];
    snprintf(rel, sizeof rel, "/etc/ssh/ssh_host_%s_key", types[i]);
    if (rpath(key, sizeof key, rel) < 0) return fail(err, cap, "%s: path too long", rel);
    if (i > 0 && access(key, F_OK) != 0) continue;
    snprintf(tmp, sizeof tmp, "%s.new", key);
    snprintf(pub, sizeof pub, "%s.pub", key);
    snprintf(tmppub, sizeof tmppub, "%s.pub", tmp);
    unlink(tmp);
    unlink(tmppub);
    const char *argv[] = {"/usr/bin/ssh-keygen", "-q", "-t", types[i], "-N", "", "-C", "", "-f", tmp, NULL};
    if (run_wait(argv) != 0) {
      unlink(tmp);
      unlink(tmppub);
      return fail(err, cap, "ssh-keygen -t %s failed", types[i]);
    }
    if (rename(tmp, key) != 0 || rename(tmppub, pub) != 0)
      return fail(err, cap, "install the new %s host key: %s", types[i], strerror(errno));
  }
  return 0;
}

/* Inodes of the sockets listening on port; their owner (first) in *pid. */
static int listening_inodes(unsigned port, unsigned long *inodes, int max, int *pid) {
  static struct sock_entry socks[SOCK_MAX];
  bool truncated;
  int n = list_listening(socks, SOCK_MAX, &truncated), k = 0;
  *pid = 0;
  for (int i = 0; i < n && k < max; i++) {
    if ((socks[i].proto != SP_TCP && socks[i].proto != SP_TCP6) || socks[i].port != port) continue;
    inodes[k++] = socks[i].inode;
    if (*pid == 0 && socks[i].pid > 0) *pid = socks[i].pid;
  }
  return k;
}

int openssh_release(const char *path) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  static char buf[65536 + 32];
  size_t keep = 0;
  int best = -1;
  for (;;) {
    ssize_t n = read(fd, buf + keep, sizeof buf - 32 - keep);
    if (n <= 0) break;
    size_t len = keep + (size_t)n;
    /* memmem, not a byte loop: the binary is ~1 MB and every instruction is emulated under TCG */
    for (const char *hit = memmem(buf, len, "OpenSSH_", 8); hit;
         hit = memmem(hit + 1, len - (size_t)(hit + 1 - buf), "OpenSSH_", 8)) {
      size_t j = (size_t)(hit - buf) + 8;
      int major = 0, minor = 0, dm = 0, dn = 0;
      while (j < len && buf[j] >= '0' && buf[j] <= '9' && dm < 3) major = major * 10 + (buf[j++] - '0'), dm++;
      if (!dm || j >= len || buf[j] != '.') continue;
      j++;
      while (j < len && buf[j] >= '0' && buf[j] <= '9' && dn < 3) minor = minor * 10 + (buf[j++] - '0'), dn++;
      if (!dn || j >= len || (buf[j] != 'p' && buf[j] != ' ' && buf[j] != 0)) continue;
      if (major * 100 + minor > best) best = major * 100 + minor;
    }
    /* a version string cut at the chunk's end is read again with the next chunk */
    keep = len < 31 ? len : 31;
    memmove(buf, buf + len - keep, keep);
  }
  close(fd);
  return best;
}

/*
 * Whether the sshd listening as pid reads the host keys from disk for each
 * connection: OpenSSH before 9.8 (read from its binary) re-executes itself
 * per connection (unless started with -r) and the new process loads the
 * keys, so new key files need no reload (a SIGHUP costs a re-exec of the
 * listener, ~0.25 s under emulation). From 9.8 the listener hands its own keys to sshd-session: a
 * reload is needed there. Any doubt answers no.
 */
static bool sshd_reads_keys_per_connection(int pid) {
  /* 9.8 moved the per-connection work to sshd-session, which gets the keys from the listener */
  char exe[64];
  snprintf(exe, sizeof exe, "/proc/%d/exe", pid);
  int version = openssh_release(exe);
  if (version < 0 || version >= 908) return false;
  static const char *const session_bins[] = {
      "/usr/lib/openssh/sshd-session", "/usr/libexec/openssh/sshd-session", "/usr/libexec/sshd-session",
      "/usr/lib/ssh/sshd-session",     "/usr/sbin/sshd-session",
  };
  for (size_t i = 0; i < sizeof session_bins / sizeof session_bins[0]; i++)
    if (access(session_bins[i], F_OK) == 0) return false;
  char path[64], buf[4096];
  snprintf(path, sizeof path, "/proc/%d/cmdline", pid);
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  ssize_t n = read(fd, buf, sizeof buf - 1);
  close(fd);
  if (n <= 0) return false;
  buf[n] = 0;
  /* sshd retitles itself ("sshd: /usr/sbin/sshd -D [listener] ..."): words split on NUL or blank */
  for (ssize_t i = 0; i < n; i++)
    if (buf[i] == 0 || buf[i] == ' ') buf[i] = 0;
  for (char *w = buf; w < buf + n; w += strlen(w) + 1) {
    if (w[0] != '-' || w[1] == '-') continue;
    for (const char *c = w + 1; *c; c++) {
      if (*c == 'r') return false;           /* -r: no re-execution */
      if (strchr("cCEfghkoOpu", *c)) break; /* a flag with an argument ends the cluster */
    }
  }
  return true;
}

/*
 * Make the sshd listening on port serve the new host keys: nothing to do when
 * it reads them per connection, else SIGHUP (it re-executes and loads them)
 * and wait until it listens again.
 */
static int reload_sshd(unsigned port, char *err, size_t cap) {
  unsigned long before[8], now[8];
  int pid, after_pid;
  int n = listening_inodes(port, before, 8, &pid);
  if (n == 0 || pid <= 0) return 0; /* sshd not started yet: it will read the new keys itself */
  if (sshd_reads_keys_per_connection(pid)) return 0;
  if (kill(pid, SIGHUP) != 0) return fail(err, cap, "SIGHUP to sshd (pid %d): %s", pid, strerror(errno));
  int64_t deadline = mono_ms() + SSHD_RELOAD_MS;
  while (mono_ms() < deadline) {
    usleep(20 * 1000);
    int m = listening_inodes(port, now, 8, &after_pid);
    bool fresh = m > 0;
    for (int i = 0; i < m && fresh; i++)
      for (int j = 0; j < n; j++)
        if (now[i] == before[j]) fresh = false;
    if (fresh) return 0;
  }
  return fail(err, cap, "sshd did not listen on port %u again within %d s of SIGHUP", port, SSHD_RELOAD_MS / 1000);
}

char identity_timing[160];

int identity_apply(const struct identity *id, bool dry, unsigned ssh_port, char *err, size_t errcap) {
  int64_t t0 = mono_ms();
  identity_timing[0] = 0;
  /* the clock and the random state first: the new keys must come from the reseeded CRNG */
  if (!dry) {
    if (set_clock(id->time_ms, err, errcap) < 0) return -1;
    if (add_entropy(id->entropy, err, errcap) < 0) return -1;
  }
  int64_t t1 = mono_ms();
  char text[512];
  snprintf(text, sizeof text, "%s\n", id->machine_id);
  if (write_rooted("/etc/machine-id", text, 0444, err, errcap) < 0) return -1;
  if (!dry && sethostname(id->hostname, strlen(id->hostname)) != 0)
    return fail(err, errcap, "sethostname: %s", strerror(errno));
  snprintf(text, sizeof text, "%s\n", id->hostname);
  if (write_rooted("/etc/hostname", text, 0644, err, errcap) < 0) return -1;
  /* the same /etc/hosts banger's initramfs writes */
  snprintf(text, sizeof text, "127.0.0.1\tlocalhost\n127.0.1.1\t%s\n::1\tlocalhost ip6-localhost ip6-loopback\n",
           id->hostname);
  if (write_rooted("/etc/hosts", text, 0644, err, errcap) < 0) return -1;
  int64_t t2 = mono_ms();
  if (!dry && set_network(id, err, errcap) < 0) return -1;
  int64_t t3 = mono_ms();
  if (regenerate_host_keys(id, err, errcap) < 0) return -1;
  int64_t t4 = mono_ms();
  if (!dry && reload_sshd(ssh_port, err, errcap) < 0) return -1;
  int64_t t5 = mono_ms();
  snprintf(identity_timing, sizeof identity_timing,
           "clock+entropy %lld ms, files %lld ms, network %lld ms, host keys %lld ms, sshd %lld ms",
           (long long)(t1 - t0), (long long)(t2 - t1), (long long)(t3 - t2), (long long)(t4 - t3),
           (long long)(t5 - t4));
  return 0;
}
