import { debianRecipe, type Recipe } from './recipe.js';

/** The built-in image catalog: names `image pull NAME` builds locally from a recipe. */
export interface CatalogEntry {
  name: string;
  description: string;
  recipe: Recipe;
}

export const CATALOG: readonly CatalogEntry[] = [
  {
    name: 'debian-bookworm',
    description:
      'Debian 12 (bookworm) minbase with systemd, OpenSSH, git, curl, tmux, iproute2, mise; built locally from Debian packages',
    recipe: debianRecipe(),
  },
];

export const catalogEntry = (name: string): CatalogEntry | undefined =>
  CATALOG.find((c) => c.name === name);
