import { Box, Text } from 'ink';
import type { VmStats, VmView } from '../../api/schemas/vms.js';
import { formatDuration, formatSizeShort } from '../../util/units.js';
import { SIGNALS } from '../actions.js';
import { age, fit, memoryUsed, portColumns, STATE_COLORS } from '../columns.js';
import { fieldErrors, type CreateForm } from '../form.js';
import { helpSections } from '../keymap.js';
import { visibleLog } from '../logs.js';
import type { Modal, TuiState } from '../store.js';
import { Table } from './table.js';

/** The panes that replace the table: details, logs, ports, the create form, prompts, help. */

type Of<K extends Modal['kind']> = Extract<Modal, { kind: K }>;

interface Sized {
  width: number;
  height: number;
}

const MIB = 1024 ** 2;

function Title({ text }: { text: string }) {
  return (
    <Text bold color="cyan" wrap="truncate">
      {text}
    </Text>
  );
}

/** `key: value` lines of a VM with its latest stats sample. */
export function detailLines(
  vm: VmView,
  stats: VmStats | undefined,
  now: number,
): [string, string][] {
  const used = memoryUsed(stats);
  return [
    ['name', vm.name],
    ['id', vm.id],
    ['state', vm.state + (vm.lastError ? ` (${vm.lastError})` : '')],
    ['host', `${vm.sshHost}  ${vm.ip ?? '-'}`],
    ['image', vm.image],
    ['kernel', vm.kernel ?? '-'],
    ['vmm', `${vm.vmm} (accel ${vm.accel ?? '?'})  pid ${vm.pid ?? '-'}`],
    [
      'size',
      `${vm.vcpu} vCPU, ${formatSizeShort(vm.memoryMib * MIB)} memory, ${formatSizeShort(vm.diskSize)} disk`,
    ],
    ['nat', vm.nat ? 'on' : 'off'],
    ['network', `mac ${vm.mac ?? '-'}  tap ${vm.tap ?? '-'}`],
    [
      'usage',
      stats
        ? `cpu ${stats.cpuPercent === null ? '-' : `${Math.round(stats.cpuPercent)}%`}, memory ${used === undefined ? '-' : formatSizeShort(used)}, disk ${formatSizeShort(stats.disk.overlayBytes + stats.disk.workBytes)} allocated`
        : '-',
    ],
    [
      'agent',
      stats ? (stats.guest ? `ok, load ${stats.guest.load1.toFixed(2)}` : 'not answering') : '-',
    ],
    ['created', `${vm.createdAt} (${age(now - Date.parse(vm.createdAt))} ago)`],
    [
      'started',
      vm.startedAt
        ? `${vm.startedAt}${vm.state === 'running' ? ` (up ${age(now - Date.parse(vm.startedAt))})` : ''}`
        : '-',
    ],
    ['stopped', vm.stoppedAt ?? '-'],
    ['boot', vm.bootMs === null ? '-' : formatDuration(vm.bootMs)],
    ['ssh', `banger vm ssh ${vm.name}`],
    ['dir', vm.dir],
  ];
}

export function DetailsPane({ s, m, height }: { s: TuiState; m: Of<'details'> } & Sized) {
  const vm = s.vms.get(m.id);
  if (!vm) return <Text dimColor>the VM is gone</Text>;
  const lines = detailLines(vm, s.stats.get(vm.id), s.now).slice(0, height - 1);
  return (
    <Box flexDirection="column" height={height}>
      <Title text={`VM ${vm.name}`} />
      {lines.map(([k, v]) => (
        <Text key={k} wrap="truncate">
          <Text dimColor>{`${k}:`.padEnd(10)}</Text>
          <Text color={k === 'state' ? STATE_COLORS[vm.state] : undefined}>{v}</Text>
        </Text>
      ))}
    </Box>
  );
}

export function LogsPane({ m, height }: { m: Of<'logs'> } & Sized) {
  const rows = Math.max(1, height - 1);
  const { lines } = visibleLog(m.log, rows);
  const mode = m.log.follow ? 'following' : 'paused';
  return (
    <Box flexDirection="column" height={height}>
      <Title text={`logs ${m.name} (${mode})${m.ended ? ` · ${m.ended}` : ''}`} />
      {lines.length === 0 ? <Text dimColor>no output yet</Text> : null}
      {lines.map((l, i) => (
        <Text key={i} wrap="truncate">
          {l || ' '}
        </Text>
      ))}
    </Box>
  );
}

export function PortsPane({ m, width, height }: { m: Of<'ports'> } & Sized) {
  const title = `ports ${m.name}`;
  if (m.error)
    return (
      <Box flexDirection="column" height={height}>
        <Title text={title} />
        <Text color="red">{m.error}</Text>
      </Box>
    );
  if (!m.ports)
    return (
      <Box flexDirection="column" height={height}>
        <Title text={title} />
        <Text dimColor>asking the guest agent…</Text>
      </Box>
    );
  return (
    <Box flexDirection="column" height={height}>
      <Title text={title} />
      <Table
        columns={portColumns()}
        rows={m.ports.ports}
        rowKey={(p) => `${p.proto}:${p.address}:${p.port}`}
        cursor={m.cursor}
        width={width}
        height={height - 1}
        empty="nothing listens in the guest"
      />
    </Box>
  );
}

export function FormPane({ f, width, height }: { f: CreateForm } & Sized) {
  const errors = fieldErrors(f);
  const labelW = 11;
  return (
    <Box flexDirection="column" height={height}>
      <Title text="New VM (empty fields take the defaults `banger vm create` uses)" />
      {f.fields.map((field, i) => {
        const on = i === f.focus;
        const value = field.kind === 'toggle' ? (f.nat ? '[x] on' : '[ ] off') : f.values[field.id];
        const err = errors[field.id];
        return (
          <Box key={field.id} flexDirection="column">
            <Text wrap="truncate">
              <Text color={on ? 'cyan' : undefined}>{on ? '› ' : '  '}</Text>
              <Text bold={on}>{fit(field.label, labelW)}</Text>
              {value ? <Text>{value}</Text> : <Text dimColor>{field.placeholder}</Text>}
              {on && field.kind === 'text' ? <Text inverse> </Text> : null}
            </Text>
            {err ? (
              <Text color="red" wrap="truncate">
                {`${' '.repeat(labelW + 2)}✗ ${err}`}
              </Text>
            ) : null}
          </Box>
        );
      })}
      <Text> </Text>
      {f.busy ? <Text color="yellow">creating…</Text> : null}
      {f.error ? (
        <Box width={width}>
          <Text color="red">{`✗ ${f.error}`}</Text>
        </Box>
      ) : null}
    </Box>
  );
}

export function ConfirmPane({ m, height }: { m: Of<'confirm'> } & Sized) {
  return (
    <Box flexDirection="column" height={height}>
      <Title text={m.title} />
      <Text>{m.detail}</Text>
      <Text> </Text>
      <Text>
        <Text bold>y</Text> yes · <Text bold>n</Text> no
      </Text>
    </Box>
  );
}

export function SignalPane({ m, height }: { m: Of<'signal'> } & Sized) {
  return (
    <Box flexDirection="column" height={height}>
      <Title text={`Kill ${m.names.join(', ')}: which signal?`} />
      {SIGNALS.map((sig, i) => (
        <Text key={sig} inverse={i === m.index}>
          {`  ${sig}  `}
        </Text>
      ))}
    </Box>
  );
}

export function PromptPane({ m, height }: { m: Of<'prompt'> } & Sized) {
  return (
    <Box flexDirection="column" height={height}>
      <Title text={m.title} />
      <Text wrap="truncate">
        {'› '}
        {m.value}
        <Text inverse> </Text>
      </Text>
      <Text dimColor>{m.hint}</Text>
    </Box>
  );
}

export function HelpPane({ s, width, height }: { s: TuiState } & Sized) {
  const keyW = 18;
  const lines: { key: string; text: string; title?: boolean }[] = [];
  for (const sec of helpSections(s)) {
    if (sec.rows.length === 0) continue;
    lines.push({ key: `t:${sec.title}`, text: sec.title, title: true });
    for (const r of sec.rows)
      lines.push({ key: `${sec.title}:${r.help}`, text: `${fit(r.keys, keyW)} ${r.help}` });
  }
  // Two columns when one does not fit.
  const rows = Math.max(1, height - 1);
  const colW = lines.length > rows ? Math.floor(width / 2) : width;
  const left = lines.slice(0, rows);
  const right = lines.slice(rows, rows * 2);
  const col = (ls: typeof lines) => (
    <Box flexDirection="column" width={colW}>
      {ls.map((l) => (
        <Text key={l.key} bold={l.title} color={l.title ? 'cyan' : undefined} wrap="truncate">
          {l.text}
        </Text>
      ))}
    </Box>
  );
  return (
    <Box flexDirection="column" height={height}>
      <Title text="Keys (? or esc closes)" />
      <Box>
        {col(left)}
        {right.length ? col(right) : null}
      </Box>
    </Box>
  );
}
