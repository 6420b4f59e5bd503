/**
 * Shell completion. The shell scripts are thin: they call the hidden
 * `banger __complete -- <words>` and show what it prints, one candidate per
 * line. All decisions happen here, in a pure function over a command tree.
 */

export interface CompletionOption {
  flags: string[];
  takesValue: boolean;
  choices?: string[];
  /** Name of the value (e.g. "image" for --image <image>). */
  valueName?: string;
}

export interface CompletionArg {
  name: string;
  variadic: boolean;
  choices?: string[];
}

export interface CompletionNode {
  name: string;
  aliases: string[];
  hidden: boolean;
  options: CompletionOption[];
  args: CompletionArg[];
  children: CompletionNode[];
}

export interface Names {
  vms: string[];
  images: string[];
  kernels: string[];
  snapshots?: string[];
  catalogKernels?: string[];
  catalogImages?: string[];
}

export type NameKind = keyof Names;

/** Which live names a value or argument called `name` completes to. */
export function kindOf(name: string): NameKind | undefined {
  switch (name) {
    case 'vm':
      return 'vms';
    case 'image':
      return 'images';
    case 'kernel':
      return 'kernels';
    case 'snapshot':
      return 'snapshots';
    case 'catalog-kernel':
      return 'catalogKernels';
    case 'ref':
      return 'catalogImages';
    default:
      return undefined;
  }
}

function findOption(
  node: CompletionNode,
  globals: CompletionOption[],
  word: string,
): CompletionOption | undefined {
  const flag = word.split('=')[0]!;
  return [...node.options, ...globals].find((o) => o.flags.includes(flag));
}

export interface CompletionRequest {
  tree: CompletionNode;
  /** Words after the program name; the last one is the word being completed (may be ''). */
  words: string[];
}

export type CompletionPlan =
  | { kind: 'static'; candidates: string[] }
  | { kind: 'names'; names: NameKind; extra: string[]; prefix: string }
  | { kind: 'files' };

/** Decide what to complete (pure). Live names are fetched by the caller only when needed. */
export function planCompletion({ tree, words }: CompletionRequest): CompletionPlan {
  const globals = tree.options;
  const prefix = words[words.length - 1] ?? '';
  let node = tree;
  let positional = 0;
  let afterDashDash = false;
  for (let i = 0; i < words.length - 1; i++) {
    const w = words[i]!;
    if (afterDashDash) continue;
    if (w === '--') {
      afterDashDash = true;
      continue;
    }
    if (w.startsWith('-')) {
      const opt = findOption(node, globals, w);
      if (opt?.takesValue && !w.includes('=')) i++;
      continue;
    }
    const child = node.children.find((c) => c.name === w || c.aliases.includes(w));
    if (child && positional === 0) {
      node = child;
      continue;
    }
    positional++;
  }
  if (afterDashDash) return { kind: 'files' };
  const filter = (xs: string[]): string[] => xs.filter((x) => x.startsWith(prefix));

  const prev = words.length >= 2 ? words[words.length - 2]! : undefined;
  if (prev?.startsWith('-') && !prev.includes('=')) {
    const opt = findOption(node, globals, prev);
    if (opt?.takesValue) {
      if (opt.choices) return { kind: 'static', candidates: filter(opt.choices) };
      const k = opt.valueName ? kindOf(opt.valueName) : undefined;
      return k ? { kind: 'names', names: k, extra: [], prefix } : { kind: 'files' };
    }
  }
  if (prefix.startsWith('-')) {
    const flags = [...node.options, ...(node === tree ? [] : globals)].flatMap((o) =>
      o.flags.filter((f) => f.startsWith('--')),
    );
    return { kind: 'static', candidates: filter([...new Set([...flags, '--help'])]) };
  }
  const subcommands =
    positional === 0 ? node.children.filter((c) => !c.hidden).map((c) => c.name) : [];
  const arg = node.args[Math.min(positional, node.args.length - 1)];
  const argApplies = arg !== undefined && (positional < node.args.length || arg.variadic);
  if (argApplies && arg.choices)
    return { kind: 'static', candidates: filter([...subcommands, ...arg.choices]) };
  const k = argApplies ? kindOf(arg.name) : undefined;
  if (k) return { kind: 'names', names: k, extra: filter(subcommands), prefix };
  if (subcommands.length) return { kind: 'static', candidates: filter(subcommands) };
  return argApplies ? { kind: 'files' } : { kind: 'static', candidates: [] };
}

export function resolvePlan(plan: CompletionPlan, names: Names | undefined): string[] {
  switch (plan.kind) {
    case 'static':
      return plan.candidates;
    case 'files':
      return [];
    case 'names':
      return [
        ...plan.extra,
        ...(names?.[plan.names] ?? []).filter((n) => n.startsWith(plan.prefix)),
      ];
  }
}

export const SHELLS = ['bash', 'zsh', 'fish', 'powershell'] as const;
export type Shell = (typeof SHELLS)[number];

/** The completion script for a shell. `prog` is the command name users type. */
export function completionScript(shell: Shell, prog = 'banger'): string {
  const fn = `_${prog.replace(/[^a-zA-Z0-9]/g, '_')}_complete`;
  switch (shell) {
    case 'bash':
      return `# bash completion for ${prog}; load with: source <(${prog} completion bash)
${fn}() {
  local IFS=$'\\n'
  local cur="\${COMP_WORDS[COMP_CWORD]}"
  COMPREPLY=( $(${prog} __complete -- "\${COMP_WORDS[@]:1:COMP_CWORD}" 2>/dev/null) )
  if [ \${#COMPREPLY[@]} -eq 0 ] && [ -n "$cur" ] || [ \${#COMPREPLY[@]} -eq 0 ]; then
    COMPREPLY=( $(compgen -f -- "$cur") )
  fi
}
complete -o filenames -F ${fn} ${prog}
`;
    case 'zsh':
      return `#compdef ${prog}
# zsh completion for ${prog}; load with: source <(${prog} completion zsh)
${fn}() {
  local -a candidates
  candidates=("\${(@f)$(${prog} __complete -- "\${(@)words[2,CURRENT]}" 2>/dev/null)}")
  candidates=("\${(@)candidates:#}")
  if (( \${#candidates} )); then
    compadd -Q -- "\${candidates[@]}"
  else
    _files
  fi
}
if (( $+functions[compdef] )); then
  compdef ${fn} ${prog}
fi
`;
    case 'fish':
      return `# fish completion for ${prog}; load with: ${prog} completion fish | source
function __${fn}
    set -l tokens (commandline -opc) (commandline -ct)
    ${prog} __complete -- $tokens[2..-1] 2>/dev/null
end
complete -c ${prog} -e
complete -c ${prog} -f -a '(__${fn})'
`;
    case 'powershell':
      return `# PowerShell completion for ${prog}; load with: ${prog} completion powershell | Out-String | Invoke-Expression
Register-ArgumentCompleter -Native -CommandName '${prog}' -ScriptBlock {
    param($wordToComplete, $commandAst, $cursorPosition)
    $words = @($commandAst.CommandElements | Select-Object -Skip 1 | ForEach-Object { $_.ToString() })
    if ($wordToComplete -eq '') { $words += '' }
    & '${prog}' __complete -- @words 2>$null | ForEach-Object {
        [System.Management.Automation.CompletionResult]::new($_, $_, 'ParameterValue', $_)
    }
}
`;
  }
}
