/**
 * banger's layer rules, checked by `npm run lint` with dependency-cruiser over
 * the TypeScript sources (src/), type-only imports included. docs/architecture.md
 * ("Layers") explains them; test/unit/layers.test.ts proves that a wrong import
 * fails the check.
 *
 * Each part of src/ sits in a tier and may import only parts of lower tiers
 * (values and types alike). Parts of the same tier never import each other, so
 * there is no cycle between folders; `no-circular` forbids cycles between files.
 */

/** Bottom to top. */
export const TIERS = [
  ['errors', 'version'], // src/errors.ts, src/version.ts: the one error type, the build identity
  ['api'], // the wire contract: routes, schemas, progress events (declarations only)
  ['util'], // edges used everywhere: exec, units, /proc, sockets, logging
  ['config', 'store'], // configuration; SQLite state
  ['guest'], // the guest contract, the agent protocol, host-side ssh
  ['vmm', 'network', 'storage'], // VMM drivers; bridge, taps, NAT; disks and ext4
  ['image', 'workspace'], // images and kernels; host checkouts copied into VMs (workspace mode)
  ['vm', 'doctor'], // the services that compose everything below
  ['daemon'], // bangerd: composes the services, serves the API
];

/**
 * The CLI talks to the daemon through the API and reads only what a client
 * needs (paths, config for the ssh key, units, ssh's command line). It may
 * import these parts (and files); types may come from any part but daemon.
 */
export const CLI_MAY_IMPORT = [
  'errors',
  'version',
  'api',
  'util',
  'config',
  'guest/ssh.ts',
  'tui/main.tsx',
];

/**
 * The TUI (`banger tui`) stands aside like the CLI: it reaches the daemon only
 * through the API client the CLI hands it, so it may import these parts;
 * types may come from any part but daemon. Only the CLI imports it, and only
 * its entry (`tui/main.tsx`, loaded when `banger tui` runs).
 */
export const TUI_MAY_IMPORT = ['errors', 'version', 'api', 'util'];

/** npm packages that are daemon-side: never reachable from the CLI, not even lazily. */
export const DAEMON_ONLY_PACKAGES = ['pino', 'better-sqlite3', 'tar-stream', 'dns-packet'];

/** A part is a folder of src/, or one file: errors and version are src/errors.ts and src/version.ts. */
const FILE_PARTS = ['errors', 'version'];
const partPath = (part) => {
  if (FILE_PARTS.includes(part)) return `^src/${part}\\.ts$`;
  if (/\.tsx?$/.test(part)) return `^src/${part.replace(/\./g, '\\.')}$`;
  return `^src/${part}/`;
};

const layerRules = TIERS.flatMap((tier, i) => {
  const below = TIERS.slice(0, i).flat();
  return tier.map((part) => ({
    name: `layer-${part}`,
    comment: below.length
      ? `${part} may import only ${below.join(', ')}`
      : `${part} imports nothing from src/`,
    severity: 'error',
    from: { path: partPath(part) },
    to: { path: '^src/', pathNot: [partPath(part), ...below.map(partPath)] },
  }));
});

const cliRules = [
  {
    name: 'layer-cli',
    comment: `cli may import only ${CLI_MAY_IMPORT.join(', ')} (types: anything but daemon)`,
    severity: 'error',
    from: { path: '^src/cli/' },
    to: {
      path: '^src/',
      pathNot: ['^src/cli/', ...CLI_MAY_IMPORT.map(partPath)],
      dependencyTypesNot: ['type-only'],
    },
  },
  {
    name: 'layer-cli-types',
    comment: 'the CLI never depends on the daemon, not even for types',
    severity: 'error',
    from: { path: '^src/cli/' },
    to: { path: '^src/daemon/' },
  },
  {
    name: 'cli-no-daemon-packages',
    comment: `the CLI never loads ${DAEMON_ONLY_PACKAGES.join(', ')}, not even lazily`,
    severity: 'error',
    from: { path: '^src/cli/' },
    to: { path: `node_modules/(${DAEMON_ONLY_PACKAGES.join('|')})/`, reachable: true },
  },
  {
    name: 'nothing-imports-cli',
    comment: 'the CLI is a leaf: nothing below it imports it',
    severity: 'error',
    from: { path: '^src/', pathNot: '^src/cli/' },
    to: { path: '^src/cli/' },
  },
];

const tuiRules = [
  {
    name: 'layer-tui',
    comment: `tui may import only ${TUI_MAY_IMPORT.join(', ')} (types: anything but daemon)`,
    severity: 'error',
    from: { path: '^src/tui/' },
    to: {
      path: '^src/',
      pathNot: ['^src/tui/', ...TUI_MAY_IMPORT.map(partPath)],
      dependencyTypesNot: ['type-only'],
    },
  },
  {
    name: 'layer-tui-types',
    comment: 'the TUI never depends on the daemon, not even for types',
    severity: 'error',
    from: { path: '^src/tui/' },
    to: { path: '^src/daemon/' },
  },
  {
    name: 'tui-no-daemon-packages',
    comment: `the TUI never loads ${DAEMON_ONLY_PACKAGES.join(', ')}, not even lazily`,
    severity: 'error',
    from: { path: '^src/tui/' },
    to: { path: `node_modules/(${DAEMON_ONLY_PACKAGES.join('|')})/`, reachable: true },
  },
  {
    name: 'only-cli-imports-tui',
    comment: 'the TUI is reached only from the CLI, through its entry tui/main.tsx',
    severity: 'error',
    from: { path: '^src/', pathNot: '^src/tui/' },
    to: { path: '^src/tui/', pathNot: '^src/tui/main\\.tsx$' },
  },
  {
    name: 'only-cli-imports-tui-entry',
    comment: 'nothing but the CLI imports the TUI',
    severity: 'error',
    from: { path: '^src/', pathNot: '^src/(cli|tui)/' },
    to: { path: '^src/tui/' },
  },
];

export const forbidden = [
  ...layerRules,
  ...cliRules,
  ...tuiRules,
  {
    name: 'no-concrete-driver',
    comment: 'outside src/vmm/, VMMs are reached through the driver interface and the registry',
    severity: 'error',
    from: { path: '^src/', pathNot: '^src/vmm/' },
    to: { path: '^src/vmm/(qemu|firecracker)/' },
  },
  {
    name: 'no-circular',
    comment: 'no import cycles between files (type-only imports included)',
    severity: 'error',
    from: { path: '^src/' },
    to: { circular: true },
  },
  {
    name: 'not-to-unresolvable',
    comment: 'every import resolves',
    severity: 'error',
    from: {},
    to: { couldNotResolve: true },
  },
];

/**
 * Temporary exceptions, each one edge (none today: the VM service split and the
 * driver interface removed the last ones). An entry is
 * `{ type: 'dependency', from, to, rule: { name, severity: 'error' }, comment }`.
 * Anything not listed here fails the check.
 */
export const TEMPORARY_EXCEPTIONS = [];

export const options = {
  doNotFollow: { path: 'node_modules' },
  includeOnly: '^(src|node_modules)/',
  tsPreCompilationDeps: true,
  tsConfig: { fileName: 'tsconfig.json' },
  knownViolations: TEMPORARY_EXCEPTIONS.map(({ comment: _why, ...v }) => v),
};

export default { forbidden, options };
