import { z } from 'zod';
import type { ContractOp } from '../guest/contract.js';

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
 * The default package set (Debian bookworm, minbase variant). No udev: banger's
 * initramfs mounts the disks and makes the few device links the guest needs,
 * and the boot is faster without it (the contract masks its units anyway).
 * kmod lets modules load on demand from the kernel's modules disk.
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
 * `--docker`: Debian's docker.io, plus dbus (Docker uses systemd's cgroup
 * driver on cgroup v2, which talks to systemd over D-Bus) and apparmor
 * (Debian kernels enable AppArmor; dockerd then needs apparmor_parser to load
 * its container profile).
 */
export const DOCKER_PACKAGES: readonly string[] = ['docker.io', 'dbus', 'apparmor'];

/** Fixed mtime clamp for reproducible builds: 2026-01-01T00:00:00Z. */
export const SOURCE_DATE_EPOCH = 1767225600;

export const DebianRecipeSchema = z.object({
  kind: z.literal('debian'),
  suite: z.string(),
  variant: z.string(),
  /** Packages to include (the base set plus additions); docker packages are implied by `docker`. */
  packages: z.array(z.string()),
  docker: z.boolean(),
  mise: MiseSchema.nullable(),
  sourceDateEpoch: z.number().int(),
});
export type DebianRecipe = z.infer<typeof DebianRecipeSchema>;
export type Recipe = DebianRecipe;
export const RecipeSchema = DebianRecipeSchema;

export function debianRecipe(over: Partial<DebianRecipe> = {}): DebianRecipe {
  return {
    kind: 'debian',
    suite: 'bookworm',
    variant: 'minbase',
    packages: [...DEBIAN_BASE_PACKAGES],
    docker: false,
    mise: { ...MISE_PIN },
    sourceDateEpoch: SOURCE_DATE_EPOCH,
    ...over,
  };
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
  if (r.docker) for (const p of DOCKER_PACKAGES) if (!all.includes(p)) all.push(p);
  return all;
}

/**
 * Operations a recipe adds after the guest contract. With Docker, dockerd and
 * containerd are not started at boot: docker.socket stays enabled, so the
 * first `docker` command starts them (keeps the boot as fast as without).
 */
export function recipeOps(r: Recipe): ContractOp[] {
  if (!r.docker) return [];
  return [
    {
      kind: 'remove',
      path: '/etc/systemd/system/multi-user.target.wants/docker.service',
      why: 'dockerd starts on first use (docker.socket)',
    },
    {
      kind: 'remove',
      path: '/etc/systemd/system/multi-user.target.wants/containerd.service',
      why: 'containerd starts with dockerd',
    },
  ];
}

/** Parse a stored recipe (image meta); undefined when the image has none or it is malformed. */
export function parseRecipe(v: unknown): Recipe | undefined {
  const r = RecipeSchema.safeParse(v);
  return r.success ? r.data : undefined;
}
