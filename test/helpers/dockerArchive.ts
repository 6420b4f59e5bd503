import { createHash } from 'node:crypto';
import fs from 'node:fs';
import { makeTar, type TarSpec } from './tarWriter.js';

/**
 * A container image written by the test itself, in the format `docker save`
 * writes and `docker load` reads (docker-archive): one layer holding the
 * host's static busybox (Debian busybox-static) and a few files, no registry
 * and no network needed.
 *
 *   manifest.json                 [{ Config, RepoTags, Layers }]
 *   <config sha256>.json          image config: rootfs.diff_ids, Cmd, Env
 *   <layer sha256>/layer.tar      the layer (uncompressed)
 */
export interface ArchiveOptions {
  /** e.g. `banger-test/busybox:1` */
  tag: string;
  /** Path of a static busybox on the host. */
  busybox: string;
  /** Busybox applets to link in /bin (busybox itself is /bin/busybox). */
  applets: string[];
  /** Extra files: path (no leading slash) → content. */
  files?: Record<string, string>;
  cmd: string[];
}

const sha256 = (b: Buffer | string): string => createHash('sha256').update(b).digest('hex');
const MTIME = 1767225600;

export function busyboxDockerArchive(o: ArchiveOptions): Buffer {
  const entries: TarSpec[] = [
    { name: 'bin/', type: 'dir', mode: 0o755, mtime: MTIME },
    {
      name: 'bin/busybox',
      content: fs.readFileSync(o.busybox),
      mode: 0o755,
      mtime: MTIME,
    },
    ...o.applets.map((a): TarSpec => ({
      name: `bin/${a}`,
      type: 'symlink',
      linkname: 'busybox',
      mode: 0o777,
      mtime: MTIME,
    })),
  ];
  const dirs = new Set<string>();
  for (const p of Object.keys(o.files ?? {})) {
    const parts = p.split('/').slice(0, -1);
    for (let i = 1; i <= parts.length; i++) dirs.add(parts.slice(0, i).join('/'));
  }
  for (const d of [...dirs].sort())
    entries.push({ name: `${d}/`, type: 'dir', mode: 0o755, mtime: MTIME });
  for (const [p, content] of Object.entries(o.files ?? {}))
    entries.push({ name: p, content, mode: 0o644, mtime: MTIME });
  const layer = makeTar(entries);
  const layerId = sha256(layer);
  const config = JSON.stringify({
    architecture: 'amd64',
    os: 'linux',
    created: new Date(MTIME * 1000).toISOString(),
    config: { Env: ['PATH=/bin'], Cmd: o.cmd },
    rootfs: { type: 'layers', diff_ids: [`sha256:${layerId}`] },
    history: [{ created: new Date(MTIME * 1000).toISOString(), created_by: 'banger test' }],
  });
  const configName = `${sha256(config)}.json`;
  const manifest = JSON.stringify([
    { Config: configName, RepoTags: [o.tag], Layers: [`${layerId}/layer.tar`] },
  ]);
  return makeTar([
    { name: `${layerId}/`, type: 'dir', mode: 0o755, mtime: MTIME },
    { name: `${layerId}/layer.tar`, content: layer, mode: 0o644, mtime: MTIME },
    { name: configName, content: config, mode: 0o644, mtime: MTIME },
    { name: 'manifest.json', content: manifest, mode: 0o644, mtime: MTIME },
  ]);
}
