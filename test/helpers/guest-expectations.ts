/**
 * What the guest contract must mask in every image, written down by hand (see
 * docs/images.md, "masks"): tests compare the contract's operations and the
 * built images against this list, never against the contract's own list, so
 * emptying or changing MASKED_UNITS in src/guest/contract.ts fails them.
 * Changing what banger masks means changing this list too.
 */
export const EXPECTED_MASKED_UNITS: readonly string[] = [
  // udev
  'systemd-udevd.service',
  'systemd-udev-trigger.service',
  'systemd-udev-settle.service',
  'systemd-hwdb-update.service',
  // pseudo file systems
  'sys-kernel-debug.mount',
  'sys-kernel-tracing.mount',
  'sys-kernel-config.mount',
  'sys-fs-fuse-connections.mount',
  'dev-hugepages.mount',
  'dev-mqueue.mount',
  'proc-sys-fs-binfmt_misc.automount',
  'systemd-binfmt.service',
  // modules
  'systemd-modules-load.service',
  'kmod-static-nodes.service',
  'modprobe@.service',
  // root file system
  'systemd-remount-fs.service',
  'systemd-fsck-root.service',
  // identity and first boot
  'systemd-firstboot.service',
  'first-boot-complete.target',
  'systemd-machine-id-commit.service',
  'systemd-random-seed.service',
  'systemd-sysusers.service',
  // boot-time bookkeeping
  'systemd-journal-catalog-update.service',
  'systemd-journal-flush.service',
  'systemd-update-utmp.service',
  'systemd-update-utmp-runlevel.service',
  'systemd-sysctl.service',
  'systemd-tmpfiles-setup-dev.service',
  'systemd-tmpfiles-clean.timer',
  'systemd-user-sessions.service',
  'systemd-pcrphase-sysinit.service',
  'systemd-pcrphase.service',
  'systemd-boot-system-token.service',
  'systemd-ask-password-console.path',
  'systemd-ask-password-wall.path',
  'cryptsetup.target',
  'veritysetup.target',
  'integritysetup.target',
  'swap.target',
  'getty-static.service',
  // periodic jobs
  'apt-daily.timer',
  'apt-daily-upgrade.timer',
  'dpkg-db-backup.timer',
  'e2scrub_all.timer',
  'e2scrub_reap.service',
  'fstrim.timer',
  'systemd-pstore.service',
];

/** All of systemd's generators that Debian bookworm ships. */
export const EXPECTED_MASKED_GENERATORS: readonly string[] = [
  'systemd-cryptsetup-generator',
  'systemd-debug-generator',
  'systemd-fstab-generator',
  'systemd-getty-generator',
  'systemd-gpt-auto-generator',
  'systemd-hibernate-resume-generator',
  'systemd-integritysetup-generator',
  'systemd-rc-local-generator',
  'systemd-run-generator',
  'systemd-system-update-generator',
  'systemd-sysv-generator',
  'systemd-veritysetup-generator',
];

/** Every path the contract links to /dev/null, sorted. */
export const EXPECTED_MASKED_PATHS: readonly string[] = [
  ...EXPECTED_MASKED_UNITS.map((u) => `/etc/systemd/system/${u}`),
  ...EXPECTED_MASKED_GENERATORS.map((g) => `/etc/systemd/system-generators/${g}`),
  '/etc/tmpfiles.d/systemd-nologin.conf',
].sort();

/** The directories those masks live in. */
export const MASK_DIRS = [
  '/etc/systemd/system',
  '/etc/systemd/system-generators',
  '/etc/tmpfiles.d',
] as const;
