import { Box, Text, useInput } from 'ink';
import { useSyncExternalStore } from 'react';
import { formatSizeShort } from '../../util/units.js';
import { imageColumns, kernelColumns, vmColumns } from '../columns.js';
import { footer } from '../keymap.js';
import { keyPresses } from '../keys.js';
import { layout } from '../layout.js';
import {
  cursorIndex,
  imageRows,
  kernelRows,
  rowKeys,
  statusLine,
  vmRows,
  type Op,
  type TuiState,
  type TuiStore,
} from '../store.js';
import { VIEWS } from '../views.js';
import {
  ConfirmPane,
  DetailsPane,
  FormPane,
  HelpPane,
  LogsPane,
  PortsPane,
  PromptPane,
  SignalPane,
} from './panes.js';
import { Table } from './table.js';

/**
 * The whole screen: header, body (a table, or the pane that is open), the
 * operations in progress, the status line and the footer of keys. It reads
 * the store and sends keys to `onKey`; it does nothing else.
 */
export interface AppProps {
  store: TuiStore;
  onKey: (name: string, input: string) => void;
  /** Read keys (off in tests that only render). */
  input?: boolean;
}

export function App({ store, onKey, input = true }: AppProps) {
  const s = useSyncExternalStore(store.subscribe, store.get);
  useInput(
    (text, key) => {
      for (const k of keyPresses(text, key)) onKey(k.name, k.input);
    },
    { isActive: input },
  );
  return <Screen s={s} />;
}

export function Screen({ s }: { s: TuiState }) {
  const l = layout(s.size, s.ops.length, statusLine(s));
  return (
    <Box flexDirection="column" width={l.width} height={l.height}>
      <Header s={s} />
      <Box height={l.body} flexDirection="column" overflow="hidden">
        <Body s={s} width={l.width} height={l.body} />
      </Box>
      {s.ops.slice(0, l.ops).map((op) => (
        <OpLine key={op.id} op={op} now={s.now} />
      ))}
      <Box height={l.status} overflow="hidden">
        <Text color={statusColor(s)} wrap="wrap">
          {statusLine(s) || ' '}
        </Text>
      </Box>
      <Footer s={s} />
    </Box>
  );
}

const statusColor = (s: TuiState): string | undefined =>
  s.conn.state === 'down' && !s.status
    ? 'red'
    : s.status?.level === 'error'
      ? 'red'
      : s.status?.level === 'ok'
        ? 'green'
        : undefined;

function Header({ s }: { s: TuiState }) {
  const conn =
    s.conn.state === 'up'
      ? { text: `bangerd up · ${s.vms.size} VMs`, color: 'green' }
      : s.conn.state === 'connecting'
        ? { text: 'bangerd: connecting…', color: 'yellow' }
        : { text: 'bangerd: down', color: 'red' };
  const filter = s.filtering || s.filter ? ` /${s.filter}${s.filtering ? '▏' : ''}` : '';
  return (
    <Text wrap="truncate">
      <Text bold>banger </Text>
      {VIEWS.map((v) => (
        <Text key={v.id} inverse={v.id === s.view} bold={v.id === s.view}>
          {` ${v.key} ${v.title} `}
        </Text>
      ))}
      <Text color={conn.color}>{`  ${conn.text}`}</Text>
      {s.marked.size ? <Text color="magenta">{` · ${s.marked.size} marked`}</Text> : null}
      {s.view === 'vms' ? (
        <Text dimColor>{` · sort ${s.sort.key}${s.sort.desc ? '↓' : ''}`}</Text>
      ) : null}
      <Text color="yellow">{filter}</Text>
    </Text>
  );
}

function Body({ s, width, height }: { s: TuiState; width: number; height: number }) {
  if (s.help) return <HelpPane s={s} width={width} height={height} />;
  const m = s.modal;
  if (m) {
    switch (m.kind) {
      case 'details':
        return <DetailsPane s={s} m={m} width={width} height={height} />;
      case 'logs':
        return <LogsPane m={m} width={width} height={height} />;
      case 'ports':
        return <PortsPane m={m} width={width} height={height} />;
      case 'form':
        return <FormPane f={m.form} width={width} height={height} />;
      case 'confirm':
        return <ConfirmPane m={m} width={width} height={height} />;
      case 'signal':
        return <SignalPane m={m} width={width} height={height} />;
      case 'prompt':
        return <PromptPane m={m} width={width} height={height} />;
    }
  }
  const cursor = cursorIndex(rowKeys(s), s.cursor[s.view]);
  const down = s.conn.state !== 'up';
  switch (s.view) {
    case 'vms':
      return (
        <Table
          columns={vmColumns(s.now)}
          rows={vmRows(s)}
          rowKey={(r) => r.vm.id}
          cursor={cursor}
          width={width}
          height={height}
          empty={down ? '' : s.filter ? `no VM matches /${s.filter}` : 'no VMs yet: n creates one'}
        />
      );
    case 'images':
      return (
        <Table
          columns={imageColumns()}
          rows={imageRows(s)}
          rowKey={(i) => i.name}
          cursor={cursor}
          width={width}
          height={height}
          empty={down ? '' : 'no images: p pulls one'}
        />
      );
    case 'kernels':
      return (
        <Table
          columns={kernelColumns()}
          rows={kernelRows(s)}
          rowKey={(k) => k.name}
          cursor={cursor}
          width={width}
          height={height}
          empty={down ? '' : 'no kernels: p pulls one'}
        />
      );
  }
}

const SPIN = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];

/** One operation in progress: spinner, label, step and progress. */
export function opText(op: Op, now: number): string {
  const secs = Math.max(0, Math.floor((now - op.started) / 1000));
  const parts = [`${SPIN[secs % SPIN.length]} ${op.label}`];
  if (op.step) parts.push(op.step);
  if (op.total) {
    const pct = Math.floor(((op.current ?? 0) / op.total) * 100);
    const amount =
      op.unit === 'bytes'
        ? `${formatSizeShort(op.current ?? 0)}/${formatSizeShort(op.total)}`
        : `${op.current ?? 0}/${op.total}`;
    parts.push(`${pct}% (${amount})`);
  } else if (op.current !== undefined && op.unit === 'bytes') {
    parts.push(formatSizeShort(op.current));
  }
  return `${parts.join(': ')} · ${secs}s`;
}

function OpLine({ op, now }: { op: Op; now: number }) {
  return (
    <Text color="yellow" wrap="truncate">
      {opText(op, now)}
    </Text>
  );
}

function Footer({ s }: { s: TuiState }) {
  const items = footer(s);
  return (
    <Text wrap="truncate">
      {items.map((f, i) => (
        <Text key={f.label}>
          {i ? '  ' : ''}
          <Text bold color="cyan">
            {f.key}
          </Text>
          <Text dimColor>{` ${f.label}`}</Text>
        </Text>
      ))}
    </Text>
  );
}
