import path from 'node:path';

/**
 * Every location banger reads or writes, resolved once from the environment
 * (XDG base dirs, overridable with BANGER_*_DIR). Pure: the caller passes env,
 * uid and home so tests never touch the real home directory.
 */
export interface Paths {
  configDir: string;
  stateDir: string;
  cacheDir: string;
  runtimeDir: string;
  configFile: string;
  sshDir: string;
  sshKey: string;
  sshConfig: string;
  knownHosts: string;
  db: string;
  log: string;
  /** Where a detached daemon's stdout/stderr go (crashes before the logger is up). */
  daemonStderr: string;
  socket: string;
  lock: string;
  vmsDir: string;
  /** VM snapshots (`vm snapshot`, `vm fork`): one directory per snapshot. */
  snapshotsDir: string;
  imagesDir: string;
  kernelsDir: string;
  imageBuildDir: string;
  ociCacheDir: string;
  debCacheDir: string;
  /** Scratch space for in-progress downloads and builds; renamed into place when complete. */
  tmpDir: string;
}

export interface PathInputs {
  env: NodeJS.ProcessEnv;
  uid: number;
  home: string;
}

const nonEmpty = (v: string | undefined): string | undefined => (v && v.length > 0 ? v : undefined);

export function resolvePaths({ env, uid, home }: PathInputs): Paths {
  const xdg = (name: string, fallback: string): string => {
    const v = nonEmpty(env[name]);
    return v && path.isAbsolute(v) ? v : path.join(home, fallback);
  };
  const configDir =
    nonEmpty(env.BANGER_CONFIG_DIR) ?? path.join(xdg('XDG_CONFIG_HOME', '.config'), 'banger');
  const stateDir =
    nonEmpty(env.BANGER_STATE_DIR) ?? path.join(xdg('XDG_STATE_HOME', '.local/state'), 'banger');
  const cacheDir =
    nonEmpty(env.BANGER_CACHE_DIR) ?? path.join(xdg('XDG_CACHE_HOME', '.cache'), 'banger');
  const xdgRuntime = nonEmpty(env.XDG_RUNTIME_DIR);
  const runtimeDir =
    nonEmpty(env.BANGER_RUNTIME_DIR) ??
    (xdgRuntime && path.isAbsolute(xdgRuntime)
      ? path.join(xdgRuntime, 'banger')
      : // root (always so under sudo) gets a directory no other user can pre-create
        uid === 0
        ? '/run/banger'
        : `/tmp/banger-${uid}`);
  const sshDir = path.join(configDir, 'ssh');
  return {
    configDir: path.resolve(configDir),
    stateDir: path.resolve(stateDir),
    cacheDir: path.resolve(cacheDir),
    runtimeDir: path.resolve(runtimeDir),
    configFile: path.join(configDir, 'config.toml'),
    sshDir,
    sshKey: path.join(sshDir, 'id_ed25519'),
    sshConfig: path.join(configDir, 'ssh_config'),
    knownHosts: path.join(configDir, 'known_hosts'),
    db: path.join(stateDir, 'banger.db'),
    log: path.join(stateDir, 'bangerd.log'),
    daemonStderr: path.join(stateDir, 'bangerd.stderr'),
    socket: path.join(runtimeDir, 'bangerd.sock'),
    lock: path.join(runtimeDir, 'bangerd.lock'),
    vmsDir: path.join(stateDir, 'vms'),
    snapshotsDir: path.join(stateDir, 'snapshots'),
    imagesDir: path.join(stateDir, 'images'),
    kernelsDir: path.join(stateDir, 'kernels'),
    imageBuildDir: path.join(stateDir, 'image-build'),
    ociCacheDir: path.join(cacheDir, 'oci'),
    debCacheDir: path.join(cacheDir, 'debs'),
    tmpDir: path.join(stateDir, 'tmp'),
  };
}

/** Paths of the process we run in. */
export function currentPaths(): Paths {
  return resolvePaths({
    env: process.env,
    uid: process.getuid?.() ?? 0,
    home: process.env.HOME ?? '/root',
  });
}
