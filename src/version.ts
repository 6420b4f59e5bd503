import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/**
 * banger's identity: the package version plus a build id written by the build
 * (a hash of the compiled files), so a rebuilt CLI notices a stale daemon.
 */
/** Repository/package root: the nearest folder above this file with a package.json
 * (dist/src/version.js when compiled, dist/cli/*.js when bundled into the CLI). */
export const PACKAGE_ROOT = findRoot(path.dirname(fileURLToPath(import.meta.url)));

function findRoot(dir: string): string {
  for (let d = dir; ; d = path.dirname(d)) {
    if (fs.existsSync(path.join(d, 'package.json'))) return d;
    if (path.dirname(d) === d) return path.resolve(dir, '..', '..');
  }
}

function read(): { version: string; build: string } {
  let version = '0.0.0';
  let build = 'dev';
  try {
    version = (
      JSON.parse(fs.readFileSync(path.join(PACKAGE_ROOT, 'package.json'), 'utf8')) as {
        version: string;
      }
    ).version;
  } catch {
    // keep default
  }
  try {
    build = (
      JSON.parse(fs.readFileSync(path.join(PACKAGE_ROOT, 'dist', 'build-info.json'), 'utf8')) as {
        build: string;
      }
    ).build;
  } catch {
    // keep default
  }
  return { version, build };
}

const info = read();
export const VERSION = info.version;
export const BUILD = info.build;
/** What CLI and daemon compare: equal strings mean the same code. */
export const IDENTITY = `${VERSION}+${BUILD}`;
