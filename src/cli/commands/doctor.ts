import type { Check, DoctorResult } from '../../api/schemas/daemon.js';
import { BangerError } from '../../errors.js';
import { formatSizeShort } from '../../util/units.js';
import type { CliContext } from '../context.js';

const MARK: Record<Check['status'], string> = { pass: 'ok  ', warn: 'warn', fail: 'FAIL' };

export function formatCheck(c: Check): string {
  return `[${MARK[c.status]}] ${c.title}: ${c.detail}${c.hint && c.status !== 'pass' ? `\n       fix: ${c.hint}` : ''}`;
}

export function formatDefaults(r: DoctorResult): string {
  const d = r.vmDefaults;
  return [
    'effective vm_defaults:',
    `  vcpu        ${d.vcpu.value} (${d.vcpu.source})`,
    `  memory      ${d.memoryMib.value}M (${d.memoryMib.source})`,
    `  disk_size   ${formatSizeShort(d.diskSize.value)} (${d.diskSize.source})`,
  ].join('\n');
}

export async function doctorCommand(ctx: CliContext): Promise<void> {
  const result = await ctx.stream(
    'doctor',
    {},
    {
      onItem: (data) => {
        if (!ctx.flags.json) ctx.print(formatCheck(data as Check));
      },
    },
  );
  if (ctx.flags.json) {
    ctx.printJson(result);
  } else {
    ctx.print();
    ctx.print(formatDefaults(result));
    ctx.print();
    ctx.print(
      `${result.summary.pass} passed, ${result.summary.warn} warnings, ${result.summary.fail} failed`,
    );
  }
  if (result.summary.fail > 0) {
    throw new BangerError('precondition', `${result.summary.fail} doctor check(s) failed`, {
      hint: 'fix the FAIL lines above',
    });
  }
}
