import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import { BangerError, isErrno } from '../../errors.js';
import { run } from '../../util/exec.js';
import { sweepDeadScratch } from '../../util/scratch.js';
import { sleep } from '../../util/sleep.js';
import { formatSize } from '../../util/units.js';

/**
 * Guest RAM of a QEMU VM as a file, and the byte streams of its migrations:
 * the file on tmpfs that QEMU maps (removed from the directory as soon as
 * QEMU runs, reached afterwards through /proc/<pid>/fd), the room check, the
 * sparse copies, and the Unix sockets the device state travels over.
 */

export const DEFAULT_SHM_DIR = '/dev/shm';

/** `/dev/shm/banger-<vmid>.ram` (pure). */
export const ramFilePath = (shmDir: string, vmId: string): string =>
  path.join(shmDir, `banger-${vmId}.ram`);

/**
 * Why a VM of memoryMib does not fit in availBytes of tmpfs, or undefined
 * when it does (pure).
 */
export function shmRoomProblem(
  vmName: string,
  shmDir: string,
  memoryMib: number,
  availBytes: number,
): BangerError | undefined {
  const need = memoryMib * 1024 * 1024;
  if (availBytes >= need) return undefined;
  return new BangerError(
    'precondition',
    `vm '${vmName}' needs ${formatSize(need)} of ${shmDir} for its memory, ${formatSize(availBytes)} free`,
    {
      hint: `free space in ${shmDir}, enlarge it (mount -o remount,size=… ${shmDir}) or give the VM less --memory`,
    },
  );
}

/** Refuse before spawning when the tmpfs cannot hold the VM's memory. */
export function checkShmRoom(vmName: string, shmDir: string, memoryMib: number): void {
  let avail: number;
  try {
    const s = fs.statfsSync(shmDir);
    avail = Number(s.bavail) * Number(s.bsize);
  } catch (e) {
    throw new BangerError(
      'precondition',
      `cannot use ${shmDir} for vm '${vmName}''s memory: ${(e as Error).message}`,
      {
        hint: `mount a tmpfs on ${shmDir}`,
        cause: e,
      },
    );
  }
  const problem = shmRoomProblem(vmName, shmDir, memoryMib, avail);
  if (problem) throw problem;
}

/** Does a link target name a RAM file of ramFilePath(shmDir, …), unlinked or not (pure)? */
export function isRamFileTarget(shmDir: string, target: string): boolean {
  const t = target.endsWith(' (deleted)') ? target.slice(0, -' (deleted)'.length) : target;
  return path.dirname(t) === shmDir && /^banger-[^/]+\.ram$/.test(path.basename(t));
}

/**
 * The fd whose link target is the VM's RAM file (pure): QEMU keeps it open
 * after the file was unlinked, so the target reads `<file> (deleted)`.
 */
export function ramFdIn(links: [fd: string, target: string][], shmDir: string): string | undefined {
  return links.find(([, t]) => isRamFileTarget(shmDir, t))?.[0];
}

/** `/proc/<pid>/fd/<n>` of the VMM's RAM file; an error when the VMM has none. */
export function ramFdPath(pid: number, shmDir: string): string {
  const dir = `/proc/${pid}/fd`;
  const links: [string, string][] = [];
  try {
    for (const fd of fs.readdirSync(dir)) {
      try {
        links.push([fd, fs.readlinkSync(path.join(dir, fd))]);
      } catch {
        // closed meanwhile
      }
    }
  } catch (e) {
    throw new BangerError(
      'vmm_failed',
      `cannot read the open files of QEMU (pid ${pid}): ${(e as Error).message}`,
      { cause: e },
    );
  }
  const fd = ramFdIn(links, shmDir);
  if (!fd)
    throw new BangerError('vmm_failed', `QEMU (pid ${pid}) has no memory file in ${shmDir} open`, {
      hint: 'it was started by an older banger without file-backed memory: stop and start it once',
    });
  return path.join(dir, fd);
}

/** Remove the RAM file's name (QEMU keeps its mapping); missing is fine. */
export function unlinkRamFile(ramFile: string): void {
  fs.rmSync(ramFile, { force: true });
}

/**
 * `cp --sparse=always`: holes (and runs of zeros) stay holes, and with
 * SEEK_DATA the cost follows the data, not the file size.
 */
export async function sparseCopy(from: string, to: string, what: string): Promise<void> {
  fs.rmSync(to, { force: true });
  await run('cp', ['--sparse=always', from, to], { what, timeoutMs: 10 * 60_000 });
}

const MIGRATION_DIR_PREFIX = 'banger-mig';

/**
 * Remove the migration directories (migrationDir) of daemons that are gone —
 * a kill -9 between making one and removing it; returns their paths. One of
 * a live process (this one, another user's daemon) is left alone.
 */
export const sweepMigrationDirs = (shmDir: string): string[] =>
  sweepDeadScratch(shmDir, [MIGRATION_DIR_PREFIX]);

/**
 * A private directory for one migration socket that QEMU, running as `owner`
 * after -runas, can reach and create files in: on the RAM tmpfs (world-
 * traversable, unlike the VM directory's parents or a private TMPDIR), mode
 * 0700, owned by that user.
 */
export function migrationDir(
  shmDir: string,
  owner?: { uid: number; gid: number },
): {
  dir: string;
  socket: string;
  remove(): void;
} {
  // Named as scratch (util/scratch.ts): a later daemon removes the ones whose owner died.
  const dir = path.join(
    shmDir,
    `${MIGRATION_DIR_PREFIX}-${process.pid}-${randomBytes(4).toString('hex')}`,
  );
  fs.mkdirSync(dir, { mode: 0o700 });
  if (owner) fs.chownSync(dir, owner.uid, owner.gid);
  return {
    dir,
    socket: path.join(dir, 'm.sock'),
    remove: () => fs.rmSync(dir, { recursive: true, force: true }),
  };
}

/**
 * Listen on `socket` (reachable by `owner`) and write the first connection's
 * bytes to `file`. `done` resolves with the byte count when that connection
 * ended and the file is written; `error()` is the stream's failure so far.
 */
export async function receiveToFile(
  socket: string,
  file: string,
  owner?: { uid: number; gid: number },
): Promise<{ done: Promise<number>; error(): Error | undefined; close(): void }> {
  const server = net.createServer();
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(socket, () => {
      server.off('error', reject);
      resolve();
    });
  });
  if (owner) fs.chownSync(socket, owner.uid, owner.gid);
  fs.chmodSync(socket, 0o600);
  let failure: Error | undefined;
  const done = new Promise<number>((resolve, reject) => {
    server.once('connection', (conn) => {
      server.close();
      const out = fs.createWriteStream(file, { mode: 0o600 });
      pipeline(conn, out).then(
        () => resolve(out.bytesWritten),
        (e: Error) => {
          failure = e;
          reject(e);
        },
      );
    });
  });
  done.catch(() => undefined);
  return {
    done,
    error: () => failure,
    close: () => server.close(),
  };
}

/**
 * Connect to `socket` (retrying while QEMU has not created it yet) and send
 * `file` through it; resolves when every byte was handed to the socket.
 */
export async function sendFile(
  socket: string,
  file: string,
  o: { timeoutMs: number; what: string },
): Promise<void> {
  const deadline = Date.now() + o.timeoutMs;
  let conn: net.Socket | undefined;
  for (;;) {
    try {
      conn = await new Promise<net.Socket>((resolve, reject) => {
        const s = net.connect(socket);
        s.once('connect', () => resolve(s));
        s.once('error', reject);
      });
      break;
    } catch (e) {
      if (!isErrno(e, 'ENOENT') && !isErrno(e, 'ECONNREFUSED')) throw e;
      if (Date.now() > deadline)
        throw new BangerError(
          'timeout',
          `${o.what}: QEMU did not listen on ${socket} within ${o.timeoutMs / 1000}s`,
        );
      await sleep(10);
    }
  }
  const size = fs.statSync(file).size;
  await pipeline(fs.createReadStream(file), conn).catch((e: unknown) => {
    // QEMU closes its end as soon as it has read the whole stream, which can be
    // before our end is shut down: that is not a failure once every byte is out
    // (the migration's own status says whether QEMU took it).
    if (
      (e as NodeJS.ErrnoException).code === 'ERR_STREAM_PREMATURE_CLOSE' &&
      conn.bytesWritten >= size
    )
      return;
    throw e;
  });
}
