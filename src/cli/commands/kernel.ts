import { routes } from '../../api/routes.js';
import { notImplemented } from '../../errors.js';
import type { CliContext } from '../context.js';

export async function kernelList(_ctx: CliContext, _opts: { available: boolean }): Promise<void> {
  throw notImplemented('kernel list');
}

export async function kernelPull(ctx: CliContext, name: string): Promise<void> {
  const k = await ctx.stream(routes.kernelPull, { body: { name } });
  if (ctx.flags.json) ctx.printJson(k);
  else ctx.print(k.name);
}

export async function kernelDelete(_ctx: CliContext, names: string[]): Promise<void> {
  throw notImplemented(`kernel delete ${names.join(' ')}`);
}
