import { z } from 'zod';
import type { ContractOp } from '../guest/contract.js';
import { dockerOps, tmuxPersistenceOps } from './devbox.js';

/**
 * A recipe says how an image is built from packages; it is stored in the
 * image's meta, so `image build --from-image` can rebuild it with more
 * packages. Pure data and pure helpers.
 */

/** mise from the npm registry: a per-platform package holding the static binary. */
export const MISE_PACKAGE = '@jdxcode/mise-linux-x64';
export const MiseSchema = z.object({
  version: z.string(),
  /** Subresource-integrity string (sha512) the registry must report and the tarball must match. */
  integrity: z.string().regex(/^sha512-[A-Za-z0-9+/]+=*$/),
});
export type MisePin = z.infer<typeof MiseSchema>;
export const MISE_PIN: MisePin = {
  version: '2026.9.15',
  integrity:
    'sha512-ButPFGyztN0Rk/HOHvHuf+W80CkvQRAjbDWHvhGJc3PnL3e2KhCYZIOyjx8wPkhr9VJa/7sJZXpxtt5JLjsfaQ==',
};

/**
 * The slim package set (Debian bookworm, minbase variant): what
 * `debian-bookworm-slim` installs and every image starts from. No udev:
 * banger's initramfs mounts the disks and makes the few device links the
 * guest needs, and the boot is faster without it (the contract masks its
 * units anyway). kmod lets modules load on demand from the kernel's modules
 * disk.
 */
export const DEBIAN_BASE_PACKAGES: readonly string[] = [
  'systemd-sysv',
  'openssh-server',
  'iproute2',
  'iputils-ping',
  'ca-certificates',
  'curl',
  'git',
  'tmux',
  'less',
  'vim-tiny',
  'sudo',
  'procps',
  'kmod',
  'netbase',
  'xz-utils',
  'unzip',
];

/**
 * What the default image adds to the slim set so that an ordinary project's
 * `make test` runs without a custom image: a C toolchain and make
 * (build-essential), pkg-config, python3 (many build scripts), jq, an ssh
 * client and rsync (fetching, deploying), htop, strace and file (looking
 * at what runs).
 */
export const DEV_PACKAGES: readonly string[] = [
  'build-essential',
  'make',
  'pkg-config',
  'jq',
  'python3',
  'openssh-client',
  'rsync',
  'htop',
  'strace',
  'file',
];

/**
 * `--docker`: Debian's docker.io (with containerd, runc, iptables), plus dbus
 * (Docker uses systemd's cgroup driver on cgroup v2, which talks to systemd
 * over D-Bus) and apparmor (Debian kernels enable AppArmor; dockerd then
 * needs apparmor_parser to load its container profile).
 */
export const DOCKER_PACKAGES: readonly string[] = ['docker.io', 'dbus', 'apparmor'];

/** `tmuxPersistence`: Debian's tmux plugin manager (TPM); the plugins are fetched by TPM itself. */
export const TMUX_PERSISTENCE_PACKAGES: readonly string[] = ['tmux-plugin-manager'];

/** Fixed mtime clamp for reproducible builds: 2026-01-01T00:00:00Z. */
export const SOURCE_DATE_EPOCH = 1767225600;

export const DebianRecipeSchema = z.object({
  kind: z.literal('debian'),
  suite: z.string(),
  variant: z.string(),
  /** Packages to include (the base set plus additions); docker packages are implied by `docker`. */
  packages: z.array(z.string()),
  docker: z.boolean(),
  /** TPM installed and tmux-resurrect + tmux-continuum declared in /root/.tmux.conf (absent in older recipes). */
  tmuxPersistence: z.boolean().default(false),
  mise: MiseSchema.nullable(),
  sourceDateEpoch: z.number().int(),
});
export type DebianRecipe = z.infer<typeof DebianRecipeSchema>;
export type Recipe = DebianRecipe;
export const RecipeSchema = DebianRecipeSchema;

/** The slim recipe (`debian-bookworm-slim`), with whatever `over` changes. */
export function debianRecipe(over: Partial<DebianRecipe> = {}): DebianRecipe {
  return {
    kind: 'debian',
    suite: 'bookworm',
    variant: 'minbase',
    packages: [...DEBIAN_BASE_PACKAGES],
    docker: false,
    tmuxPersistence: false,
    mise: { ...MISE_PIN },
    sourceDateEpoch: SOURCE_DATE_EPOCH,
    ...over,
  };
}

/** The default image's recipe (`debian-bookworm`): the slim set, the dev tools, Docker, tmux persistence. */
export function devRecipe(): DebianRecipe {
  return debianRecipe({
    packages: [...DEBIAN_BASE_PACKAGES, ...DEV_PACKAGES],
    docker: true,
    tmuxPersistence: true,
  });
}

/** A recipe plus packages (and Docker): what `image build --from-image` builds. */
export function extendRecipe(base: Recipe, add: { packages?: string[]; docker?: boolean }): Recipe {
  const packages = [...base.packages];
  for (const p of add.packages ?? []) if (!packages.includes(p)) packages.push(p);
  return { ...base, packages, docker: base.docker || Boolean(add.docker) };
}

/** Every package mmdebstrap is asked to include. */
export function includedPackages(r: Recipe): string[] {
  const all = [...r.packages];
  const implied = [
    ...(r.docker ? DOCKER_PACKAGES : []),
    ...(r.tmuxPersistence ? TMUX_PERSISTENCE_PACKAGES : []),
  ];
  for (const p of implied) if (!all.includes(p)) all.push(p);
  return all;
}

/**
 * Operations a recipe adds after the guest contract (src/image/devbox.ts):
 * Docker's boot trimming and data directory, the tmux persistence block.
 */
export function recipeOps(r: Recipe): ContractOp[] {
  return [...(r.docker ? dockerOps() : []), ...(r.tmuxPersistence ? tmuxPersistenceOps() : [])];
}

/** Parse a stored recipe (image meta); undefined when the image has none or it is malformed. */
export function parseRecipe(v: unknown): Recipe | undefined {
  const r = RecipeSchema.safeParse(v);
  return r.success ? r.data : undefined;
}
