import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/**
 * banger's identity: the package version plus a build id written by the build
 * (a hash of the compiled files), so a rebuilt CLI notices a stale daemon.
 */
const here = path.dirname(fileURLToPath(import.meta.url));
/** Repository/package root (dist/src/version.js → ../..). */
export const PACKAGE_ROOT = path.resolve(here, '..', '..');

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
