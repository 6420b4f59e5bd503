#include "growfs.h"
#include "sysinfo.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#define EXT4_MAGIC 0xEF53
/* linux/ext4.h: grow a mounted filesystem to n blocks. */
#define EXT4_IOC_RESIZE_FS_ _IOW('f', 16, uint64_t)

const char *const growfs_mounts[GROWFS_MOUNTS] = {"/root", "/run/banger/overlay"};

/* Bytes of the block device behind st_dev, from /sys/dev/block/M:m/size (512-byte sectors). */
static uint64_t device_bytes(dev_t dev) {
  char rel[64], p[1024], buf[64];
  snprintf(rel, sizeof rel, "/sys/dev/block/%u:%u/size", major(dev), minor(dev));
  if (rpath(p, sizeof p, rel) < 0 || read_small(p, buf, sizeof buf) <= 0) return 0;
  unsigned long long sectors = 0;
  if (sscanf(buf, "%llu", &sectors) != 1) return 0;
  return (uint64_t)sectors * 512;
}

static void grow_one(const char *mount, struct growfs_result *r, bool dry_run) {
  memset(r, 0, sizeof *r);
  r->mount = mount;
  char p[1024], parent[1040];
  if (rpath(p, sizeof p, mount) < 0) {
    snprintf(r->error, sizeof r->error, "path too long");
    return;
  }
  int fd = open(p, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) {
    snprintf(r->error, sizeof r->error, "cannot open %s: %s", mount, strerror(errno));
    return;
  }
  struct stat st, pst;
  struct statfs sf;
  snprintf(parent, sizeof parent, "%s/..", p);
  if (fstat(fd, &st) != 0 || stat(parent, &pst) != 0 || fstatfs(fd, &sf) != 0) {
    snprintf(r->error, sizeof r->error, "cannot stat %s: %s", mount, strerror(errno));
    close(fd);
    return;
  }
  if (st.st_dev == pst.st_dev || (unsigned long)sf.f_type != EXT4_MAGIC) {
    snprintf(r->error, sizeof r->error, "no ext4 filesystem is mounted on %s", mount);
    close(fd);
    return;
  }
  r->mounted = true;
  uint64_t bsize = (uint64_t)sf.f_bsize;
  r->before = (uint64_t)sf.f_blocks * bsize;
  r->after = r->before;
  r->device = device_bytes(st.st_dev);
  if (r->device == 0 || bsize == 0) {
    snprintf(r->error, sizeof r->error, "cannot read the size of the device behind %s", mount);
    close(fd);
    return;
  }
  /* f_blocks leaves out the filesystem's overhead: compare with the device, let the kernel decide. */
  uint64_t blocks = r->device / bsize;
  if (!dry_run && ioctl(fd, EXT4_IOC_RESIZE_FS_, &blocks) != 0) {
    snprintf(r->error, sizeof r->error, "growing %s to %llu blocks failed: %s", mount,
             (unsigned long long)blocks, strerror(errno));
  }
  if (fstatfs(fd, &sf) == 0) r->after = (uint64_t)sf.f_blocks * (uint64_t)sf.f_bsize;
  close(fd);
}

int growfs_all(struct growfs_result out[GROWFS_MOUNTS], bool dry_run) {
  int grown = 0;
  for (int i = 0; i < GROWFS_MOUNTS; i++) {
    grow_one(growfs_mounts[i], &out[i], dry_run);
    if (out[i].after > out[i].before) grown++;
  }
  return grown;
}
