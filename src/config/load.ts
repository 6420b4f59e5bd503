import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parse as parseToml, TomlError } from 'smol-toml';
import type { z } from 'zod';
import { BangerError } from '../errors.js';
import { locateKey, type KeyLocation } from './locate.js';
import { cidrContains, intToIp, ipToInt, parseCidr } from '../util/ipv4.js';
import {
  DEFAULT_CONFIG,
  FILE_SYNC_FIELDS,
  TOP_FIELDS,
  VM_DEFAULT_FIELDS,
  type Config,
  type FieldSpec,
  type FileSync,
} from './schema.js';

/**
 * Config loading in three steps: parse (TOML text → raw table), normalise
 * (env overrides, per-key schemas, ~ expansion) and validate (cross-key rules).
 * Every failure names the file, the line and the key.
 */

export interface LoadedConfig {
  config: Config;
  file: string;
  exists: boolean;
  /** Keys whose value came from BANGER_<KEY> env vars. */
  fromEnv: string[];
  /** Keys set in the file. */
  fromFile: string[];
}

export interface LoadInputs {
  file: string;
  env: NodeJS.ProcessEnv;
  home?: string;
  /** Override the file content (tests). */
  text?: string;
}

type Raw = Record<string, unknown>;

class Ctx {
  constructor(
    readonly file: string,
    readonly text: string,
    readonly fromEnv: string[] = [],
  ) {}
  fail(loc: KeyLocation, what: string, message: string, hint?: string): never {
    const full = loc.key === undefined ? undefined : keyName(loc.table, loc.key);
    if (full !== undefined && this.fromEnv.includes(full)) {
      const name = envName(full.replace(/\./g, '_'));
      throw new BangerError('config_invalid', `environment variable ${name}: ${what}: ${message}`, {
        hint: `fix or unset ${name}`,
        details: { env: name, key: full },
      });
    }
    const line = this.text ? locateKey(this.text, loc) : undefined;
    const where = line ? `${this.file}:${line}` : this.file;
    throw new BangerError('config_invalid', `${where}: ${what}: ${message}`, {
      hint: hint ?? `fix it in ${this.file}`,
      details: { file: this.file, line, key: loc.key },
    });
  }
}

const keyName = (table: string[], key: string): string => [...table, key].join('.');

function zodMessage(err: z.ZodError): string {
  const issue = err.issues[0];
  if (!issue) return 'invalid value';
  if (issue.code === 'invalid_value' && 'values' in issue) {
    return `must be one of ${(issue.values as unknown[]).map((v) => JSON.stringify(v)).join(', ')}`;
  }
  if (issue.code === 'invalid_type') return `has the wrong type (expected ${issue.expected})`;
  return issue.message;
}

function readFields(
  ctx: Ctx,
  raw: Raw,
  fields: FieldSpec[],
  loc: Omit<KeyLocation, 'key'>,
  label: string,
): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  const known = new Set(fields.map((f) => f.key));
  for (const key of Object.keys(raw)) {
    if (!known.has(key)) {
      ctx.fail(
        { ...loc, key },
        `unknown key '${keyName(loc.table, key)}'`,
        `not a banger setting${label}`,
        `remove it or use one of: ${[...known].join(', ')}`,
      );
    }
  }
  for (const f of fields) {
    if (!(f.key in raw)) continue;
    const r = f.schema.safeParse(raw[f.key]);
    if (!r.success)
      ctx.fail(
        { ...loc, key: f.key },
        `bad value for '${keyName(loc.table, f.key)}'${loc.index !== undefined ? ` in [[${loc.table.join('.')}]] entry ${loc.index + 1}` : ''}`,
        zodMessage(r.error),
      );
    out[f.key] = r.data;
  }
  return out;
}

const expandHome = (p: string, home: string): string =>
  p === '~' ? home : p.startsWith('~/') ? path.join(home, p.slice(2)) : p;

export const envName = (key: string): string => `BANGER_${key.toUpperCase()}`;

/** Env overrides: BANGER_<KEY> for top-level keys, BANGER_VM_DEFAULTS_<KEY> for [vm_defaults]. */
function applyEnv(raw: Raw, env: NodeJS.ProcessEnv, fromEnv: string[]): void {
  for (const f of TOP_FIELDS) {
    const v = env[envName(f.key)];
    if (v !== undefined && v !== '') {
      raw[f.key] = v;
      fromEnv.push(f.key);
    }
  }
  for (const f of VM_DEFAULT_FIELDS) {
    const v = env[envName(`vm_defaults_${f.key}`)];
    if (v !== undefined && v !== '') {
      const table = (raw.vm_defaults ??= {}) as Raw;
      table[f.key] = v;
      fromEnv.push(`vm_defaults.${f.key}`);
    }
  }
}

export function loadConfig({ file, env, home = os.homedir(), text }: LoadInputs): LoadedConfig {
  let source = text;
  let exists = text !== undefined;
  if (source === undefined) {
    try {
      source = fs.readFileSync(file, 'utf8');
      exists = true;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') {
        throw new BangerError('config_invalid', `cannot read ${file}: ${(e as Error).message}`, {
          hint: 'check the file permissions',
        });
      }
      source = '';
    }
  }
  const fromEnv: string[] = [];
  const ctx = new Ctx(file, source, fromEnv);

  // 1. parse
  let parsed: Raw;
  try {
    parsed = parseToml(source) as Raw;
  } catch (e) {
    if (e instanceof TomlError) {
      const first = e.message.split('\n')[0] ?? 'syntax error';
      throw new BangerError(
        'config_invalid',
        `${file}:${e.line}: invalid TOML: ${first.replace(/^Invalid TOML document: /, '')}`,
        {
          hint: `fix the syntax in ${file}`,
          details: { file, line: e.line, column: e.column },
        },
      );
    }
    throw e;
  }
  const fromFile = Object.keys(parsed).flatMap((k) =>
    k === 'vm_defaults' && isTable(parsed[k])
      ? Object.keys(parsed[k] as Raw).map((s) => `vm_defaults.${s}`)
      : [k],
  );

  // 2. normalise
  const raw: Raw = { ...parsed };
  if (raw.vm_defaults !== undefined && isTable(raw.vm_defaults))
    raw.vm_defaults = { ...(raw.vm_defaults as Raw) };
  applyEnv(raw, env, fromEnv);

  const { vm_defaults: vmDefaultsRaw, file_sync: fileSyncRaw, ...topRaw } = raw;
  const top = readFields(ctx, topRaw, TOP_FIELDS, { table: [] }, '');

  let vmDefaults: Record<string, unknown> = {};
  if (vmDefaultsRaw !== undefined) {
    if (!isTable(vmDefaultsRaw))
      ctx.fail(
        { table: [], key: 'vm_defaults' },
        "bad value for 'vm_defaults'",
        'must be a table [vm_defaults]',
      );
    vmDefaults = readFields(
      ctx,
      vmDefaultsRaw as Raw,
      VM_DEFAULT_FIELDS,
      { table: ['vm_defaults'] },
      ' in [vm_defaults]',
    );
  }

  const fileSync: FileSync[] = [];
  if (fileSyncRaw !== undefined) {
    if (!Array.isArray(fileSyncRaw) || !fileSyncRaw.every(isTable)) {
      ctx.fail(
        { table: [], key: 'file_sync' },
        "bad value for 'file_sync'",
        'must be an array of tables [[file_sync]]',
      );
    }
    (fileSyncRaw as Raw[]).forEach((entry, index) => {
      const loc = { table: ['file_sync'], index };
      const v = readFields(ctx, entry, FILE_SYNC_FIELDS, loc, ' in [[file_sync]]');
      for (const required of ['host', 'guest'] as const) {
        if (v[required] === undefined) {
          ctx.fail(
            { table: ['file_sync'], index },
            `[[file_sync]] entry ${index + 1}`,
            `'${required}' is required`,
          );
        }
      }
      fileSync.push({
        host: expandHome(v.host as string, home),
        guest: (v.guest as string).replace(/^~\//, '/root/'),
        ...(v.mode !== undefined ? { mode: v.mode as number } : {}),
      });
    });
  }

  const config: Config = {
    ...DEFAULT_CONFIG,
    vmDefaults: {},
    fileSync,
  };
  const set = <K extends keyof Config>(k: K, v: unknown): void => {
    if (v !== undefined) config[k] = v as Config[K];
  };
  set('logLevel', top.log_level);
  set('vmm', top.vmm);
  set(
    'firecrackerBin',
    top.firecracker_bin === undefined ? undefined : expandHome(top.firecracker_bin as string, home),
  );
  set(
    'jailerBin',
    top.jailer_bin === undefined || top.jailer_bin === 'off'
      ? top.jailer_bin
      : expandHome(top.jailer_bin as string, home),
  );
  set('qemuBin', top.qemu_bin === undefined ? undefined : expandHome(top.qemu_bin as string, home));
  set('accel', top.accel);
  set(
    'sshKeyPath',
    top.ssh_key_path === undefined ? undefined : expandHome(top.ssh_key_path as string, home),
  );
  set('vmmUser', top.vmm_user);
  set('defaultImageName', top.default_image_name);
  set('defaultKernel', top.default_kernel);
  set('bridgeName', top.bridge_name);
  set('bridgeIp', top.bridge_ip);
  set('cidr', top.cidr);
  set('defaultDns', top.default_dns);
  set('dnsListen', top.dns_listen);
  set('dnsRouting', top.dns_routing);
  set('guestToGuest', top.guest_to_guest);
  set('tapPoolSize', top.tap_pool_size);
  set('warmStart', top.warm_start);
  set('tcgAslr', top.tcg_aslr);
  set('autoStopStaleAfterMs', top.auto_stop_stale_after);
  set('statsPollIntervalMs', top.stats_poll_interval);
  set('logMaxBytes', top.log_max_size);
  if (vmDefaults.vcpu !== undefined) config.vmDefaults.vcpu = vmDefaults.vcpu as number;
  if (vmDefaults.memory_mib !== undefined)
    config.vmDefaults.memoryMib = vmDefaults.memory_mib as number;
  if (vmDefaults.disk_size !== undefined)
    config.vmDefaults.diskSize = vmDefaults.disk_size as number;

  // 3. validate across keys
  validate(ctx, config);
  return { config, file, exists, fromEnv, fromFile };
}

function validate(ctx: Ctx, c: Config): void {
  if (!cidrContains(c.cidr, c.bridgeIp)) {
    ctx.fail(
      { table: [], key: 'bridge_ip' },
      `bad value for 'bridge_ip'`,
      `${c.bridgeIp} is not inside cidr ${c.cidr}`,
    );
  }
  const { network, prefix } = parseCidr(c.cidr);
  const broadcast = intToIp((ipToInt(network) | (0xffffffff >>> prefix)) >>> 0);
  if (c.bridgeIp === network || c.bridgeIp === broadcast) {
    ctx.fail(
      { table: [], key: 'bridge_ip' },
      `bad value for 'bridge_ip'`,
      `${c.bridgeIp} is the network or broadcast address of ${c.cidr}`,
    );
  }
  if (c.statsPollIntervalMs !== 0 && c.statsPollIntervalMs < 500) {
    ctx.fail(
      { table: [], key: 'stats_poll_interval' },
      `bad value for 'stats_poll_interval'`,
      'must be at least 500ms',
    );
  }
}

const isTable = (v: unknown): v is Raw =>
  typeof v === 'object' && v !== null && !Array.isArray(v) && !(v instanceof Date);
