import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { AGENT_BINARY_NAME } from '../guest/agentUnit.js';
import { CONTRACT_VERSION, contractFingerprint, guestContractOps } from '../guest/contract.js';
import { PACKAGE_ROOT } from '../version.js';
import { DPKG_NODOC_CFG, mmdebstrapArgs } from './debian/mmdebstrap.js';
import { recipeOps, type Recipe } from './recipe.js';

/**
 * What an image built from a recipe depends on, as one hash: the recipe, the
 * guest contract (operations, agent binary, pinned mise), the mmdebstrap
 * command line and the builder version. Two builds with the same key give
 * the same image (modulo Debian updates of the mirror); tests key their image
 * cache on it.
 */

/** Bump when the build pipeline changes in ways the argv and contract do not show. */
export const BUILDER_VERSION = 1;

/** The agent binary images get: dist/guest/banger-agent of this install. */
export const defaultAgentBinary = (): string =>
  path.join(PACKAGE_ROOT, 'dist', 'guest', AGENT_BINARY_NAME);

const MISE_PLACEHOLDER = '/nonexistent/banger-mise';

export function sha256File(p: string): string {
  return createHash('sha256').update(fs.readFileSync(p)).digest('hex');
}

export function imageInputs(recipe: Recipe, agentBinary: string): Record<string, unknown> {
  const ops = [
    ...guestContractOps({ agentBinary, miseBinary: recipe.mise ? MISE_PLACEHOLDER : undefined }),
    ...recipeOps(recipe),
  ];
  const contract = contractFingerprint(ops, (p) =>
    p === MISE_PLACEHOLDER ? (recipe.mise?.integrity ?? '') : sha256File(p),
  );
  const argv = mmdebstrapArgs({
    recipe,
    mode: 'unshare',
    mirror: { kind: 'lines', lines: [], reason: '' },
    output: 'OUT',
    debCacheDir: 'CACHE',
    dpkgOptFile: 'DPKG',
    contractHooks: [],
  });
  return {
    builder: BUILDER_VERSION,
    contractVersion: CONTRACT_VERSION,
    recipe,
    contract: createHash('sha256').update(contract).digest('hex'),
    argv,
    dpkg: DPKG_NODOC_CFG,
  };
}

/** sha256 (hex) of `imageInputs`. */
export function imageInputsKey(recipe: Recipe, agentBinary: string = defaultAgentBinary()): string {
  return createHash('sha256')
    .update(JSON.stringify(imageInputs(recipe, agentBinary)))
    .digest('hex');
}
