import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { which } from '../../src/util/exec.js';
import { isRoot, needs, vmEnv, type VmEnv } from '../helpers/e2e.js';
import { CLI, REPO_ROOT, sleep } from '../helpers/sandbox.js';
import { startTmux, type Tmux } from '../helpers/tmux.js';

/**
 * `banger tui` in a real terminal (tmux) against a daemon with a real QEMU
 * VM, in a network namespace made by the test. One VM boots (the one the
 * create form makes); the one created from the CLI is not started.
 */

interface Vm {
  name: string;
  state: string;
}

describe('banger tui in tmux (real VM)', { timeout: 15 * 60_000 }, () => {
  let env: VmEnv | undefined;
  let term: Tmux | undefined;
  const ok = (): boolean => isRoot() && which('tmux') !== undefined;

  before(async () => {
    if (!ok()) return;
    env = await vmEnv('tui');
    term = await startTmux({
      wrap: ['ip', 'netns', 'exec', env.ns],
      env: env.sb.env,
      cwd: REPO_ROOT,
      columns: 100,
      rows: 30,
    });
  });
  after(async () => {
    await term?.kill();
    await env?.cleanup();
  });

  const state = async (name: string): Promise<string | undefined> =>
    (await env!.json<Vm[]>(['vm', 'list'])).find((v) => v.name === name)?.state;

  test('the table, the create form, ssh, stop and quit', async (t) => {
    if (!needs(t, ok(), 'needs root (network namespace, taps) and tmux')) return;
    const e = env!;
    const tty = term!;
    await tty.line(`${process.execPath} ${CLI} tui; echo tui-exit=$?`);
    await tty.waitFor(/bangerd up · 0 VMs/, 'the TUI connected', 60_000);
    assert.equal(await tty.display('#{alternate_on}'), '1', 'the TUI runs on the alternate screen');

    await tty.keys(['?']);
    console.log(`# help overlay:\n${await tty.waitFor(/Keys \(\? or esc closes\)/, 'help')}`);
    await tty.keys(['Escape']);
    await tty.waitFor(/no VMs yet/, 'help closed');

    // A VM created from the CLI shows up through the event stream.
    const cli = e.name('cli');
    const created = await e.run(['vm', 'create', '--name', cli, '--no-start']);
    assert.equal(created.code, 0, created.stderr);
    const t0 = Date.now();
    await tty.waitFor(
      new RegExp(`${cli} +(created|stopped)`),
      'the CLI-made VM in the table',
      2000,
    );
    console.log(`# the CLI-made VM appeared after ${Date.now() - t0} ms`);

    // The create form: a bad name is refused where it was typed; a good one makes a VM.
    await tty.keys(['n']);
    await tty.waitFor(/New VM/, 'the create form');
    await tty.keys(['Bad_Name'], { literal: true });
    const refused = await tty.waitFor(
      /✗ use 1-64 lowercase letters, digits or dashes/,
      'the inline error',
    );
    console.log(`# create form, bad name:\n${refused}`);
    await tty.keys(['Enter']);
    await sleep(300);
    assert.equal((await e.json<Vm[]>(['vm', 'list'])).length, 1, 'nothing was created');
    const good = e.name('form');
    for (let i = 0; i < 'Bad_Name'.length; i++) await tty.keys(['BSpace']);
    await tty.keys([good], { literal: true });
    console.log(`# create form:\n${await tty.waitFor(new RegExp(`› name +${good}`), 'good name')}`);
    await tty.keys(['Enter']);
    await tty.waitFor(new RegExp(`${good} +(created|starting)`), 'the new VM in the table', 30_000);
    assert.ok(await state(good), 'the form created the VM');
    await tty.waitFor(new RegExp(`${good} +running`), 'the VM running', 6 * 60_000);
    // Its first stats sample: CPU%, memory in use and the agent's health.
    await tty.waitFor(
      new RegExp(`${good} +running +\\d+ +\\S+/\\S+ .* ok `),
      'the VM stats',
      30_000,
    );
    console.log(`# main view:\n${await tty.capture()}`);

    // Resized to 80x24: the frame is redrawn to fit, header first and keys last.
    await tty.resize(80, 24);
    const small = await tty.waitFor(/\? help .* q quit/, 'the footer at 80x24');
    const lines = small.replace(/\n$/, '').split('\n');
    assert.equal(lines.length, 24);
    assert.match(lines[0]!, /^banger {2}1 VMs/);
    assert.match(lines[23]!, /\? help/);
    assert.ok(lines.every((l) => l.length <= 80));
    assert.match(small, new RegExp(`${good} +running`));
    console.log(`# main view at 80x24:\n${small}`);

    // ssh from the TUI: the session gets the terminal, then the table comes back.
    await tty.keys(['/']);
    await tty.keys([good], { literal: true });
    await tty.keys(['Enter']);
    await tty.waitFor(new RegExp(`/${good}`), 'the filter');
    await tty.keys(['e']);
    await tty.waitFor(/root@/, 'the guest shell prompt', 60_000);
    assert.equal(await tty.display('#{alternate_on}'), '0', 'ssh has the normal screen');
    await tty.line('echo tui-ssh-$((6*7)); exit');
    // The session's output stays on the shell's screen (checked after quitting).
    await tty.waitFor(new RegExp(`ssh ${good}: session ended \\(exit 0\\)`), 'back in the table');
    assert.equal(await tty.display('#{alternate_on}'), '1');

    // Logs (console and VMM log) and ports of the selected VM.
    await tty.keys(['l']);
    await tty.waitFor(new RegExp(`logs ${good} \\(following\\)`), 'the log pane');
    // The console's lines arrive after the VMM log's: wait for a screenful of them.
    const consoleLines = (text: string): string[] =>
      text
        .split('\n')
        .slice(2, -3)
        .filter((l) => l.trim() && !l.startsWith('==> VMM log'));
    let logs = await tty.capture();
    for (let i = 0; i < 100 && consoleLines(logs).length < 5; i++) {
      await sleep(100);
      logs = await tty.capture();
    }
    assert.ok(consoleLines(logs).length >= 5, `console lines in the pane:\n${logs}`);
    console.log(`# logs:\n${logs}`);
    await tty.keys(['Escape']);
    await tty.keys(['p']);
    const ports = await tty.waitFor(/tcp +\S+ +22 /, 'sshd among the ports', 60_000);
    console.log(`# ports:\n${ports}`);
    await tty.keys(['Escape']);
    await tty.waitFor(new RegExp(`${good} +running`), 'back in the table');

    // Stop from the TUI: the daemon's list says so.
    await tty.keys(['x']);
    await tty.waitFor(new RegExp(`${good}: stopped`), 'the stop result', 120_000);
    assert.equal(await state(good), 'stopped');
    await tty.waitFor(new RegExp(`${good} +stopped`), 'the row stopped');

    // q leaves: exit 0, the shell's screen back.
    await tty.keys(['q']);
    const shell = await tty.waitFor(/tui-exit=\d+/, 'the TUI exited');
    console.log(`# the shell after q:\n${shell}`);
    assert.match(shell, /tui-exit=0/);
    assert.match(shell, /^tui-ssh-42$/m, 'the command ran in the guest, on this terminal');
    assert.equal(await tty.display('#{alternate_on}'), '0', 'no alternate screen left');
  });
});
