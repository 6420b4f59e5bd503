import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { AGENT_BINARY_NAME } from '../guest/agentUnit.js';
import { CONTRACT_VERSION, contractFingerprint, guestContractOps } from '../guest/contract.js';
import { fileURLToPath } from 'node:url';
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

/** The compiled code that turns a recipe into ext4 files (relative to dist/src). */
const BUILDER_CODE = [
  'image/debian',
  'image/tree',
  'image/workSeed.js',
  'storage',
  'guest/contract.js',
  'guest/contract',
];
let codeHash: string | undefined;

/**
 * sha256 over the builder's compiled code, so a change to the converter or the
 * builder invalidates cached images (tests) and shows in image meta.
 */
export function builderCodeHash(): string {
  if (codeHash) return codeHash;
  const src = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
  const h = createHash('sha256');
  const add = (p: string) => {
    let st: fs.Stats;
    try {
      st = fs.statSync(p);
    } catch {
      return;
    }
    if (st.isDirectory()) {
      for (const n of fs.readdirSync(p).sort()) add(path.join(p, n));
    } else if (p.endsWith('.js')) {
      h.update(path.relative(src, p));
      h.update(fs.readFileSync(p));
    }
  };
  for (const rel of BUILDER_CODE) add(path.join(src, rel));
  codeHash = h.digest('hex');
  return codeHash;
}

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
    code: builderCodeHash(),
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
