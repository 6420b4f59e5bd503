/*
 * A restored VM's new identity (op "set-identity"): the host sends it before
 * the VM is reported ready, so two VMs restored from one snapshot never share
 * an address, a host key, a machine-id or a random stream. See
 * docs/guest-agent.md, "Identity after a restore".
 */
#ifndef BANGER_AGENT_IDENTITY_H
#define BANGER_AGENT_IDENTITY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define IDENTITY_ENTROPY_BYTES 64
#define IDENTITY_ED25519_BYTES 32

struct identity {
  char hostname[65];
  char machine_id[33];
  char iface[16];
  unsigned char mac[6];
  uint32_t ip; /* network byte order */
  unsigned prefix;
  uint32_t gateway; /* network byte order */
  unsigned char entropy[IDENTITY_ENTROPY_BYTES];
  double time_ms; /* host wall clock, ms since the epoch */
  /*
   * The new ed25519 host key, made by the host (hostKeySeed, hostKeyPublic):
   * written as it is instead of running ssh-keygen for it. Unset when the
   * host sent none (an older daemon).
   */
  bool have_ed25519;
  unsigned char ed25519_seed[IDENTITY_ED25519_BYTES];
  unsigned char ed25519_pub[IDENTITY_ED25519_BYTES];
};

/*
 * Apply it: the clock (clock_settime), the entropy (RNDADDENTROPY, then
 * RNDRESEEDCRNG), /etc/machine-id, the hostname (sethostname, /etc/hostname,
 * /etc/hosts), the interface's MAC, address and default route, new SSH host
 * keys (the host's ed25519 key when it sent one, else ssh-keygen; then, unless
 * sshd reads them per connection, SIGHUP to the listening sshd, waiting until
 * it listens again).
 * With dry set (Unix-socket test transports) only the files under g_root are
 * written and the keys regenerated; the kernel is left alone.
 * Returns 0, or -1 with a one-line reason in err.
 */
int identity_apply(const struct identity *id, bool dry, unsigned ssh_port, char *err, size_t errcap);

/* After a successful identity_apply: how long each of its steps took, one line for the log. */
extern char identity_timing[160];

/*
 * The OpenSSH release a binary carries, as major*100 + minor; -1 when the
 * file has none or cannot be read. The release string is "OpenSSH_<M>.<m>"
 * followed by 'p', a blank or NUL ("OpenSSH_9.2p1"); compat patterns in the
 * binary ("OpenSSH_7.4*", "OpenSSH_6.6.1*") are not. The highest one wins.
 */
int openssh_release(const char *path);

/* Parsers for the request's fields; each returns false when the text is not valid. */
bool parse_mac(const char *s, unsigned char out[6]);
bool parse_ipv4(const char *s, uint32_t *out);
bool parse_hex(const char *s, unsigned char *out, size_t n);
bool valid_hostname(const char *s);

#endif
