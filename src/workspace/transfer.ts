import { spawn } from 'node:child_process';
import fs from 'node:fs';
import { Readable } from 'node:stream';
import tarStream from 'tar-stream';
import { BangerError } from '../errors.js';
import { spawnFailure } from '../util/exec.js';
import { hostAlias, sshArgs } from '../guest/ssh.js';
import { tarHeader, type WorkspaceEntry } from './plan.js';

/**
 * Moving a copy into a running guest: one tar, built on the host as it is
 * sent, over one ssh connection (never a round trip per file). The guest
 * only unpacks.
 */

export interface GuestTarget {
  name: string;
  ip: string;
  keyPath: string;
  knownHosts: string;
}

export interface GuestRun {
  code: number;
  stdout: string;
  stderr: string;
}

/** Run a script in the guest as root over ssh (the daemon has a route to its guests), stdin from `input`. */
export function guestRun(
  t: GuestTarget,
  script: string,
  opts: { input?: Readable | Buffer; signal?: AbortSignal; onSent?: (bytes: number) => void } = {},
): Promise<GuestRun> {
  const args = sshArgs({
    alias: hostAlias(t.name),
    hostName: t.ip,
    keyPath: t.keyPath,
    knownHosts: t.knownHosts,
    tty: false,
    command: [script],
    options: { BatchMode: 'yes', ConnectTimeout: '20' },
  });
  return new Promise((resolve, reject) => {
    const child = spawn('ssh', args, { stdio: ['pipe', 'pipe', 'pipe'], signal: opts.signal });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (c: Buffer) => out.push(c));
    child.stderr.on('data', (c: Buffer) => err.length < 1000 && err.push(c));
    child.on('error', (e: NodeJS.ErrnoException) =>
      reject(
        spawnFailure(e, {
          cmd: 'ssh',
          what: `copying into vm '${t.name}'`,
          install: 'openssh-client',
        }),
      ),
    );
    child.on('close', (code) =>
      resolve({
        code: code ?? 255,
        stdout: Buffer.concat(out).toString('utf8'),
        stderr: Buffer.concat(err).toString('utf8'),
      }),
    );
    child.stdin.on('error', () => undefined); // the guest side failed: its stderr says why
    const input = opts.input;
    if (!input) child.stdin.end();
    else if (Buffer.isBuffer(input)) child.stdin.end(input);
    else {
      let sent = 0;
      input.on('data', (c: Buffer) => {
        sent += c.length;
        opts.onSent?.(sent);
        if (!child.stdin.write(c)) {
          input.pause();
          child.stdin.once('drain', () => input.resume());
        }
      });
      input.on('end', () => child.stdin.end());
      input.on('error', (e) => {
        child.kill('SIGTERM');
        reject(e);
      });
    }
  });
}

/**
 * A tar of the entries, made as it is read. Files are opened when their turn
 * comes; one that changed size since it was listed goes in with its size now.
 */
export function tarOf(entries: WorkspaceEntry[]): AsyncIterable<Buffer> {
  const pack = tarStream.pack();
  const addFile = async (e: WorkspaceEntry): Promise<void> => {
    let fh: fs.promises.FileHandle;
    try {
      fh = await fs.promises.open(e.source!, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW);
    } catch (err) {
      throw new BangerError('precondition', `cannot read ${e.source}: ${(err as Error).message}`, {
        hint: 'it changed while it was being copied: run the command again',
      });
    }
    try {
      const size = (await fh.stat()).size;
      let sink!: ReturnType<typeof pack.entry>;
      const written = new Promise<void>((resolve, reject) => {
        sink = pack.entry({ ...tarHeader(e), size }, (er) => (er ? reject(er) : resolve()));
      });
      written.catch(() => undefined); // awaited below; a failure must not go unhandled meanwhile
      let left = size;
      const buf = Buffer.allocUnsafe(1 << 20);
      while (left > 0) {
        const { bytesRead } = await fh.read(buf, 0, Math.min(buf.length, left), null);
        if (bytesRead === 0) {
          throw new BangerError('precondition', `${e.source} shrank while it was being copied`, {
            hint: 'run the command again',
          });
        }
        left -= bytesRead;
        if (!sink.write(Buffer.from(buf.subarray(0, bytesRead)))) await once(sink, 'drain');
      }
      sink.end(undefined);
      await written;
    } finally {
      await fh.close();
    }
  };
  const addEmpty = (e: WorkspaceEntry): Promise<void> =>
    new Promise((resolve, reject) => {
      pack.entry(tarHeader(e), (er) => (er ? reject(er) : resolve())).end(undefined);
    });
  void (async () => {
    try {
      for (const e of entries) {
        if (e.kind === 'file') await addFile(e);
        else await addEmpty(e);
      }
      pack.finalize();
    } catch (e) {
      pack.destroy(e as Error);
    }
  })();
  return pack as unknown as AsyncIterable<Buffer>;
}

const once = (emitter: { once(ev: string, fn: () => void): unknown }, ev: string): Promise<void> =>
  new Promise((resolve) => emitter.once(ev, resolve));

/** Preamble bytes, then the tar: what `receiveScript` reads. */
export function receiveStream(preamble: Buffer, entries: WorkspaceEntry[]): Readable {
  return Readable.from(
    (async function* () {
      yield preamble;
      for await (const chunk of tarOf(entries)) yield chunk as Buffer;
    })(),
  );
}
