import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, test } from 'node:test';
import { AGENT_INSTALL_PATH, AGENT_UNIT_LINK, AGENT_UNIT_PATH } from '../../src/guest/agentUnit.js';
import {
  checkOps,
  contractFingerprint,
  guestContractOps,
  maskedPaths,
  MISE_INSTALL_PATH,
  MISE_PROFILE_PATH,
  serialGettyUnitText,
  SSH_EARLY_DROPIN_PATH,
  SSH_HOSTKEY_DROPIN_PATH,
  SSHD_DROPIN_PATH,
  withBlock,
  type BlockOp,
  type ContractOp,
  type WriteOp,
} from '../../src/guest/contract.js';
import {
  applyContractToTree,
  blockHookScript,
  blockScript,
  globToRegExp,
  planHookSteps,
  removalHookScript,
  shGlobPath,
  writeContractTar,
  type ContractMeta,
  type ContractTree,
} from '../../src/guest/contract/apply.js';
import { EXPECTED_MASKED_PATHS } from '../helpers/guest-expectations.js';

const AGENT = '/build/banger-agent';
const ops = guestContractOps({ agentBinary: AGENT, miseBinary: '/cache/mise' });
const byPath = (p: string): ContractOp[] => ops.filter((o) => o.path === p);
const fileText = (p: string): string => {
  const o = ops.findLast((x) => x.path === p && x.kind === 'file');
  assert.ok(o && o.kind === 'file' && 'content' in o, `${p} is a file with content`);
  return o.content;
};

/** Parse a unit file into section -> key -> values (keys may repeat). */
function parseUnit(text: string): Record<string, Record<string, string[]>> {
  const out: Record<string, Record<string, string[]>> = {};
  let section = '';
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (!line || line.startsWith('#')) continue;
    const m = /^\[(.+)\]$/.exec(line);
    if (m) {
      section = m[1]!;
      out[section] = {};
      continue;
    }
    const eq = line.indexOf('=');
    assert.ok(eq > 0 && section, `bad unit line: ${line}`);
    (out[section]![line.slice(0, eq)] ??= []).push(line.slice(eq + 1));
  }
  return out;
}

describe('guest contract operations (data)', () => {
  test('sshd drop-in: the three contract lines, ed25519 host key only, no PAM', () => {
    const lines = fileText(SSHD_DROPIN_PATH)
      .split('\n')
      .filter((l) => l && !l.startsWith('#'));
    assert.deepEqual(lines, [
      'PermitRootLogin prohibit-password',
      'PasswordAuthentication no',
      'KbdInteractiveAuthentication no',
      'HostKey /etc/ssh/ssh_host_ed25519_key',
      'UsePAM no',
    ]);
    assert.equal(SSHD_DROPIN_PATH, '/etc/ssh/sshd_config.d/banger.conf');
  });

  test('no host keys in the image: removed first, never written', () => {
    assert.deepEqual(ops[0], {
      kind: 'remove',
      path: '/etc/ssh/ssh_host_*',
      why: 'no shared host keys: each VM makes its own',
    });
    assert.ok(!ops.some((o) => o.kind !== 'remove' && /ssh_host_/.test(o.path)));
  });

  test('ssh.service: host key generated on first start (ExecStartPre reset), early start', () => {
    const keygen = parseUnit(fileText(SSH_HOSTKEY_DROPIN_PATH));
    const pre = keygen.Service!.ExecStartPre!;
    assert.equal(pre[0], '', 'the list is reset first (drops Debian`s sshd -t)');
    assert.equal(pre.length, 2);
    assert.match(pre[1]!, /test -s \/etc\/ssh\/ssh_host_ed25519_key \|\|/);
    assert.match(pre[1]!, /ssh-keygen -q -t ed25519 -N "" .*-f \/etc\/ssh\/ssh_host_ed25519_key/);
    const early = parseUnit(fileText(SSH_EARLY_DROPIN_PATH));
    assert.deepEqual(early.Unit!.DefaultDependencies, ['no']);
    assert.deepEqual(early.Unit!.Conflicts, ['shutdown.target']);
  });

  test('the keygen command works in sh (creates the key once, keeps it after)', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'bgt-keygen-'));
    try {
      const pre = parseUnit(fileText(SSH_HOSTKEY_DROPIN_PATH)).Service!.ExecStartPre![1]!;
      const script = /^\/bin\/sh -c '(.*)'$/.exec(pre)![1]!.replaceAll('/etc/ssh', dir);
      fs.writeFileSync(path.join(dir, 'ssh_host_ed25519_key'), ''); // an empty leftover is replaced
      execFileSync('/bin/sh', ['-c', script]);
      const key = fs.readFileSync(path.join(dir, 'ssh_host_ed25519_key'), 'utf8');
      assert.match(key, /BEGIN OPENSSH PRIVATE KEY/);
      execFileSync('/bin/sh', ['-c', script]);
      assert.equal(fs.readFileSync(path.join(dir, 'ssh_host_ed25519_key'), 'utf8'), key, 'kept');
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  test('guest agent: binary from the host file, unit, sysinit.target.wants link', () => {
    const bin = byPath(AGENT_INSTALL_PATH)[0];
    assert.deepEqual(bin, {
      kind: 'file',
      path: AGENT_INSTALL_PATH,
      mode: 0o755,
      sourcePath: AGENT,
      uid: 0,
      gid: 0,
      why: 'guest agent',
    });
    assert.equal(byPath(AGENT_UNIT_PATH)[0]?.kind, 'file');
    const link = byPath(AGENT_UNIT_LINK)[0];
    assert.ok(link?.kind === 'symlink' && link.target === AGENT_UNIT_PATH);
  });

  test('every masked unit and generator is a symlink to /dev/null', () => {
    // The expected list is written down in the test helpers, not taken from the contract.
    const links = ops.filter(
      (o): o is Extract<ContractOp, { kind: 'symlink' }> =>
        o.kind === 'symlink' && o.target === '/dev/null',
    );
    assert.deepEqual(links.map((o) => o.path).sort(), EXPECTED_MASKED_PATHS);
    for (const p of EXPECTED_MASKED_PATHS) {
      const o = byPath(p);
      assert.equal(o.length, 1, `${p} once`);
      assert.deepEqual(o[0], { ...o[0], kind: 'symlink', target: '/dev/null', uid: 0, gid: 0 }, p);
    }
    assert.deepEqual(maskedPaths(ops).sort(), EXPECTED_MASKED_PATHS, 'maskedPaths lists them');
    for (const keep of ['ssh.service', 'systemd-journald.service', 'banger-agent.service']) {
      const masked = byPath(`/etc/systemd/system/${keep}`).some(
        (o) => o.kind === 'symlink' && o.target === '/dev/null',
      );
      assert.equal(masked, false, `${keep} is not masked`);
    }
  });

  test('serial console: full unit without the udev device binding, enabled for getty.target', () => {
    const u = parseUnit(serialGettyUnitText());
    assert.equal(u.Unit!.BindsTo, undefined);
    assert.ok(!(u.Unit!.After ?? []).some((a) => a.includes('dev-%i.device')));
    assert.match(u.Service!.ExecStart![0]!, /agetty .* - \$TERM$/);
    const link = byPath('/etc/systemd/system/getty.target.wants/serial-getty@ttyS0.service')[0];
    assert.ok(link?.kind === 'symlink' && link.target === '../serial-getty@ttyS0.service');
    assert.ok(
      ops.some(
        (o) =>
          o.kind === 'remove' &&
          o.path === '/etc/systemd/system/getty.target.wants/getty@tty1.service',
      ),
    );
  });

  test('power key, journald, fstab, default target, /root', () => {
    const pk = parseUnit(fileText('/etc/systemd/system/banger-powerkey.service'));
    assert.deepEqual(pk.Unit!.ConditionPathExists, ['/dev/input/power-button']);
    assert.match(pk.Service!.ExecStart![0]!, /systemctl poweroff/);
    assert.ok(byPath('/etc/systemd/system/multi-user.target.wants/banger-powerkey.service')[0]);
    assert.deepEqual(
      parseUnit(fileText('/etc/systemd/journald.conf.d/banger.conf')).Journal!.Storage,
      ['volatile'],
    );
    assert.equal(
      fileText('/etc/fstab')
        .split('\n')
        .filter((l) => l && !l.startsWith('#')).length,
      0,
    );
    const def = byPath('/etc/systemd/system/default.target')[0];
    assert.ok(def?.kind === 'symlink' && def.target === '/lib/systemd/system/multi-user.target');
    const root = byPath('/root')[0];
    assert.ok(root?.kind === 'dir' && root.mode === 0o700 && root.uid === 0);
  });

  test('mise: binary on PATH and a profile snippet for bash, only when given', () => {
    const m = byPath(MISE_INSTALL_PATH)[0];
    assert.ok(
      m?.kind === 'file' && 'sourcePath' in m && m.sourcePath === '/cache/mise' && m.mode === 0o755,
    );
    assert.match(fileText(MISE_PROFILE_PATH), /mise activate bash/);
    const without = guestContractOps({ agentBinary: AGENT });
    assert.ok(!without.some((o) => o.path === MISE_INSTALL_PATH || o.path === MISE_PROFILE_PATH));
  });

  test('the profile snippet is valid sh, harmless without mise, and activates mise in bash', () => {
    const text = fileText(MISE_PROFILE_PATH);
    execFileSync('/bin/sh', ['-n', '-c', text]);
    // The snippet names mise by its absolute path: point it at a file of the test's.
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'bgt-mise-profile-'));
    try {
      const mise = path.join(dir, 'mise');
      assert.ok(text.includes(MISE_INSTALL_PATH));
      const snippet = path.join(dir, 'mise.sh');
      fs.writeFileSync(snippet, text.replaceAll(MISE_INSTALL_PATH, mise));
      /** Source the snippet, then report what it changed: exit status, MISE_ON, PATH. */
      const source = (shell: string, ...flags: string[]) =>
        spawnSync(
          shell,
          [...flags, '-c', `. ${snippet}; echo "after:$?:\${MISE_ON:-none}:$PATH"`],
          { encoding: 'utf8', env: { PATH: '/usr/bin:/bin', HOME: dir } },
        );
      for (const shell of ['/bin/sh', '/bin/bash']) {
        const r = source(shell);
        assert.deepEqual(
          [r.status, r.stdout, r.stderr],
          [0, 'after:0:none:/usr/bin:/bin\n', ''],
          `${shell} without mise: no output, nothing changed, the shell goes on`,
        );
      }
      // With a mise there, bash evaluates what `mise activate` prints; sh (no bash) ignores it.
      fs.writeFileSync(mise, `#!/bin/sh\necho "MISE_ON='$*'"\n`, { mode: 0o755 });
      assert.equal(source('/bin/bash').stdout, 'after:0:activate bash --shims:/usr/bin:/bin\n');
      assert.match(
        source('/bin/bash', '--norc', '--noprofile', '-i').stdout,
        /^after:0:activate bash:\/usr\/bin:\/bin$/m,
        'interactive shells get the full activation',
      );
      assert.equal(source('/bin/sh').stdout, 'after:0:none:/usr/bin:/bin\n');
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  test('paths are absolute and normalised; checkOps rejects bad ones', () => {
    checkOps(ops);
    assert.throws(
      () => checkOps([{ kind: 'remove', path: 'etc/x' }]),
      /contract path 'etc\/x' must be absolute and normalised$/,
    );
    assert.throws(
      () => checkOps([{ kind: 'remove', path: '/etc/../x' }]),
      /contract path '\/etc\/\.\.\/x' must be absolute and normalised$/,
    );
    assert.throws(
      () => checkOps([{ kind: 'remove', path: '/et*/x' }]),
      /contract path '\/et\*\/x': '\*' only in the last component$/,
    );
    assert.throws(
      () => checkOps([{ kind: 'dir', path: '/a*', mode: 0o755, uid: 0, gid: 0 }]),
      /contract path '\/a\*': only removals may use '\*'$/,
    );
  });

  test('fingerprint covers contents and injected files', () => {
    const a = contractFingerprint(ops, () => 'x');
    assert.equal(
      a,
      contractFingerprint(ops, () => 'x'),
    );
    assert.notEqual(
      a,
      contractFingerprint(ops, () => 'y'),
      'agent/mise digests count',
    );
    assert.ok(!a.includes('why'));
  });
});

// ------------------------------------------------------------------ appliers

/** A small in-memory tree with RootfsTree's edit semantics. */
class MemTree implements ContractTree {
  nodes = new Map<string, { type: string; content?: string; target?: string; meta: ContractMeta }>([
    ['/', { type: 'dir', meta: { uid: 0, gid: 0, mode: 0o755 } }],
  ]);
  private parents(p: string) {
    const parts = p.split('/').filter(Boolean);
    for (let i = 1; i < parts.length; i++) {
      const d = `/${parts.slice(0, i).join('/')}`;
      if (!this.nodes.has(d))
        this.nodes.set(d, { type: 'dir', meta: { uid: 0, gid: 0, mode: 0o755 } });
    }
  }
  writeFile(p: string, content: string | Buffer, meta: ContractMeta = { uid: 0, gid: 0 }) {
    this.parents(p);
    this.remove(p);
    this.nodes.set(p, { type: 'file', content: content.toString(), meta });
  }
  mkdir(p: string, meta: ContractMeta = { uid: 0, gid: 0 }) {
    this.parents(p);
    const n = this.nodes.get(p);
    if (n?.type === 'dir') n.meta = { ...n.meta, ...meta };
    else this.nodes.set(p, { type: 'dir', meta });
  }
  symlink(p: string, target: string, meta: ContractMeta = { uid: 0, gid: 0 }) {
    this.parents(p);
    this.remove(p);
    this.nodes.set(p, { type: 'symlink', target, meta });
  }
  remove(p: string) {
    let any = false;
    for (const k of [...this.nodes.keys()]) {
      if (k === p || k.startsWith(`${p}/`)) any = this.nodes.delete(k) || any;
    }
    return any;
  }
  readFile(p: string) {
    const n = this.nodes.get(p);
    if (n?.type !== 'file') throw new Error(`${p}: not a file`);
    return Buffer.from(n.content ?? '');
  }
  exists(p: string) {
    return this.nodes.has(p);
  }
  get(p: string) {
    const n = this.nodes.get(p);
    return n ? { type: n.type } : undefined;
  }
  list(p: string) {
    const pre = p === '/' ? '/' : `${p}/`;
    return [...this.nodes.keys()]
      .filter((k) => k.startsWith(pre) && k !== p && !k.slice(pre.length).includes('/'))
      .map((k) => k.slice(pre.length))
      .sort();
  }
}

describe('guest contract appliers', () => {
  test('tree applier: keys removed, masks, files with owner and mode, existing content replaced', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'bgt-contract-'));
    try {
      const agent = path.join(dir, 'agent');
      fs.writeFileSync(agent, 'AGENT');
      const t = new MemTree();
      t.writeFile('/etc/ssh/ssh_host_rsa_key', 'secret');
      t.writeFile('/etc/ssh/ssh_host_ed25519_key.pub', 'pub');
      t.writeFile('/etc/ssh/moduli', 'keep');
      t.writeFile('/etc/fstab', 'UUID=x / ext4 defaults 0 1\n');
      t.symlink('/etc/resolv.conf', '../run/systemd/resolve/stub-resolv.conf');
      t.symlink('/etc/systemd/system/getty.target.wants/getty@tty1.service', '/lib/x');
      applyContractToTree(guestContractOps({ agentBinary: agent }), t, { mtime: 1 });
      assert.deepEqual(
        t.list('/etc/ssh').filter((n) => n.startsWith('ssh_host')),
        [],
      );
      assert.equal(t.nodes.get('/etc/ssh/moduli')?.content, 'keep');
      assert.equal(t.nodes.get('/etc/systemd/system/systemd-udevd.service')?.target, '/dev/null');
      assert.equal(t.nodes.get(AGENT_INSTALL_PATH)?.content, 'AGENT');
      assert.deepEqual(t.nodes.get(AGENT_INSTALL_PATH)?.meta, {
        uid: 0,
        gid: 0,
        mode: 0o755,
        mtime: 1,
      });
      assert.equal(t.nodes.get('/etc/resolv.conf')?.type, 'file');
      assert.ok(!t.exists('/etc/systemd/system/getty.target.wants/getty@tty1.service'));
      assert.equal(t.nodes.get('/root')?.meta.mode, 0o700);
      assert.doesNotMatch(t.nodes.get('/etc/fstab')!.content!, /UUID/);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  test('globs match only the last component', () => {
    assert.ok(globToRegExp('ssh_host_*').test('ssh_host_rsa_key.pub'));
    assert.ok(!globToRegExp('ssh_host_*').test('xssh_host_'));
    assert.ok(globToRegExp('a.b').test('a.b') && !globToRegExp('a.b').test('axb'));
  });

  test('hook plan keeps the order: removals, then writes, then removals', () => {
    const steps = planHookSteps([
      { kind: 'remove', path: '/a' },
      { kind: 'remove', path: '/b*' },
      { kind: 'dir', path: '/c', mode: 0o755, uid: 0, gid: 0 },
      { kind: 'symlink', path: '/c/d', target: '/dev/null', uid: 0, gid: 0 },
      { kind: 'remove', path: '/e' },
    ]);
    assert.deepEqual(
      steps.map((s) =>
        s.kind === 'remove'
          ? ['rm', ...s.paths]
          : s.kind === 'block'
            ? ['block', s.op.path]
            : ['tar', ...s.ops.map((o) => o.path)],
      ),
      [
        ['rm', '/a', '/b*'],
        ['tar', '/c', '/c/d'],
        ['rm', '/e'],
      ],
    );
    const contract = planHookSteps(ops);
    assert.equal(contract[0]!.kind, 'remove');
  });

  test('removal script: runs inside the chroot, globs only in the last component', () => {
    const script = removalHookScript(['/etc/ssh/ssh_host_*', "/it's here"]);
    assert.match(script, /^chroot "\$1" \/bin\/sh -c /);
    // what the shell inside the chroot is asked to run
    const inner = execFileSync('/bin/sh', [
      '-c',
      `chroot() { printf '%s' "$4"; }; ${script}`,
      'sh',
      '/x',
    ]).toString();
    assert.equal(inner, `rm -rf -- '/etc/ssh/''ssh_host_'* '/''it'\\''s here'`);
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'bgt-glob-'));
    try {
      for (const f of ['ssh_host_a', 'ssh_host_b.pub', 'moduli', 'x y'])
        fs.writeFileSync(path.join(dir, f), '');
      const out = execFileSync('/bin/sh', [
        '-c',
        `cd ${dir} && printf '%s\\n' ${shGlobPath('/ssh_host_*').replace(/^'\/'/, '')} ${shGlobPath('/x y').replace(/^'\/'/, '')}`,
      ]).toString();
      assert.deepEqual(out.trim().split('\n'), ['ssh_host_a', 'ssh_host_b.pub', 'x y']);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  test('contract tar: exact owners, modes, symlinks and host file contents', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'bgt-tar-'));
    try {
      const agent = path.join(dir, 'agent');
      fs.writeFileSync(agent, 'AGENTBYTES');
      const writes = guestContractOps({ agentBinary: agent }).filter(
        (o): o is WriteOp => o.kind !== 'remove' && o.kind !== 'block',
      );
      const file = path.join(dir, 'c.tar');
      await writeContractTar(writes, file, { mtime: 1767225600 });
      const listing = execFileSync('tar', [
        '--numeric-owner',
        '--full-time',
        '-tvf',
        file,
      ]).toString();
      const line = (p: string) => listing.split('\n').find((l) => l.includes(` .${p}`)) ?? '';
      assert.match(line(AGENT_INSTALL_PATH), /^-rwxr-xr-x 0\/0 +10 2026-01-01 00:00:00/);
      assert.match(line('/root/'), /^drwx------ 0\/0 /);
      assert.match(
        line('/etc/systemd/system/systemd-udevd.service'),
        /^lrwxrwxrwx 0\/0 .* -> \/dev\/null$/,
      );
      assert.match(line(SSHD_DROPIN_PATH), /^-rw-r--r-- 0\/0 /);
      assert.ok(!/ssh_host_/.test(listing));
      const extracted = path.join(dir, 'x');
      fs.mkdirSync(extracted);
      execFileSync('tar', ['-xf', file, '-C', extracted]);
      assert.equal(fs.readFileSync(path.join(extracted, AGENT_INSTALL_PATH), 'utf8'), 'AGENTBYTES');
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('fenced blocks (one managed block in a user file)', () => {
  const op: BlockOp = {
    kind: 'block',
    path: '/root/.tool.conf',
    mode: 0o640,
    uid: 0,
    gid: 0,
    begin: '# >>> banger: x.y [1] $HOME/* >>>',
    end: '# <<< banger <<<',
    lines: ['set a 1', "say 'it''s' \\n"],
  };
  const BLOCK = `${op.begin}\nset a 1\nsay 'it''s' \\n\n${op.end}\n`;

  test('withBlock: appended once; user lines kept; every old copy removed', () => {
    assert.equal(withBlock(undefined, op), BLOCK);
    assert.equal(withBlock('', op), BLOCK);
    assert.equal(withBlock('mine\n', op), `mine\n${BLOCK}`);
    assert.equal(withBlock('mine', op), `mine\n${BLOCK}`, 'a missing final newline is added');
    const twice = `a\n${op.begin}\nold\n${op.end}\nb\n${op.begin}\nold2\n${op.end}\n`;
    assert.equal(withBlock(twice, op), `a\nb\n${BLOCK}`);
    assert.equal(withBlock(withBlock('a\n', op), op), `a\n${BLOCK}`, 'rewritten, not duplicated');
  });

  test('the chroot script does what withBlock does (run by sh on real files)', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'bgt-block-'));
    try {
      fs.mkdirSync(path.join(dir, 'root'));
      const f = path.join(dir, op.path);
      const cases: (string | undefined)[] = [
        undefined,
        '',
        'mine',
        'mine\n',
        `a\n${op.begin}\nold\n${op.end}\nb\n${op.begin}\nold2\n${op.end}\n`,
        `a\n${op.begin.replace('[1]', 'X')}\nnot ours (regex characters are literal)\n`,
      ];
      for (const start of cases) {
        fs.rmSync(f, { force: true });
        if (start !== undefined) fs.writeFileSync(f, start, { mode: 0o600 });
        execFileSync('/bin/sh', ['-c', blockScript(op, dir)]);
        assert.equal(fs.readFileSync(f, 'utf8'), withBlock(start, op), JSON.stringify(start));
        execFileSync('/bin/sh', ['-c', blockScript(op, dir)]);
        assert.equal(fs.readFileSync(f, 'utf8'), withBlock(start, op), 'idempotent');
        const mode = fs.statSync(f).mode & 0o777;
        assert.equal(mode, start === undefined ? 0o640 : 0o600, 'a new file gets the mode');
      }
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
    assert.match(blockHookScript(op), /^chroot "\$1" \/bin\/sh -c '/);
  });

  test('tree applier: the block replaces an old one and keeps user lines', () => {
    const t = new MemTree();
    t.writeFile(op.path, `mine\n${op.begin}\nold\n${op.end}\n`);
    applyContractToTree([op], t, { mtime: 1 });
    assert.equal(t.nodes.get(op.path)?.content, `mine\n${BLOCK}`);
    const fresh = new MemTree();
    applyContractToTree([op], fresh, { mtime: 1 });
    assert.equal(fresh.nodes.get(op.path)?.content, BLOCK);
    assert.equal(fresh.nodes.get(op.path)?.meta.mode, 0o640);
  });

  test('markers must be distinct single lines that no body line repeats', () => {
    assert.throws(() => checkOps([{ ...op, end: op.begin }]), /distinct/);
    assert.throws(() => checkOps([{ ...op, begin: 'a\nb' }]), /single lines/);
    assert.throws(() => checkOps([{ ...op, lines: [op.end] }]), /repeats a marker/);
  });
});
