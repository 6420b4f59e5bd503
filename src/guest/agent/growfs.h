/*
 * Online growth of banger's ext4 disks inside the guest: after the host made a
 * disk file larger (and the VMM told the guest), each filesystem is grown to
 * fill its block device with the kernel's EXT4_IOC_RESIZE_FS, on the mounted
 * filesystem. No e2fsprogs, no shell, nothing on the host touches guest data.
 */
#ifndef BANGER_AGENT_GROWFS_H
#define BANGER_AGENT_GROWFS_H

#include <stdbool.h>
#include <stdint.h>

/* The mounts of banger's writable disks: the work disk and the overlay disk. */
#define GROWFS_MOUNTS 2
extern const char *const growfs_mounts[GROWFS_MOUNTS];

struct growfs_result {
  const char *mount;
  bool mounted;         /* an ext4 filesystem is mounted there */
  uint64_t before;      /* filesystem size in bytes before */
  uint64_t after;       /* and after */
  uint64_t device;      /* size of its block device in bytes (0 = unknown) */
  char error[160];      /* empty when fine */
};

/*
 * Grow every mount of growfs_mounts (below g_root) to its device size.
 * With dry_run, only measure. Fills out[GROWFS_MOUNTS]; returns how many grew.
 */
int growfs_all(struct growfs_result out[GROWFS_MOUNTS], bool dry_run);

#endif
