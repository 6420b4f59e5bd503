import { debianRecipe, devRecipe, type Recipe } from './recipe.js';

/** The built-in image catalog: names `image pull NAME` builds locally from a recipe. */
export interface CatalogEntry {
  name: string;
  description: string;
  recipe: Recipe;
  /**
   * What the built rootfs.ext4 measured on the build machine (bytes): shown by
   * `image list --available` before the image exists. Builds differ a little
   * with Debian updates.
   */
  approxSize: { sizeBytes: number; allocatedBytes: number };
}

export const CATALOG: readonly CatalogEntry[] = [
  {
    name: 'debian-bookworm',
    description:
      'Debian 12 dev box: systemd, OpenSSH, Docker (socket-activated), build-essential, make, pkg-config, python3, git, curl, jq, rsync, tmux + TPM (resurrect, continuum), mise, htop, strace',
    recipe: devRecipe(),
    approxSize: { sizeBytes: 1_059_000_000, allocatedBytes: 942_000_000 },
  },
  {
    name: 'debian-bookworm-slim',
    description: 'Debian 12 minbase: systemd, OpenSSH, git, curl, tmux, iproute2, vim-tiny, mise',
    recipe: debianRecipe(),
    approxSize: { sizeBytes: 434_000_000, allocatedBytes: 374_000_000 },
  },
];

export const catalogEntry = (name: string): CatalogEntry | undefined =>
  CATALOG.find((c) => c.name === name);
