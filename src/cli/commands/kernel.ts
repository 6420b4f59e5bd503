import { notImplemented } from '../../errors.js';
import type { CliContext } from '../context.js';

export async function kernelList(_ctx: CliContext, _opts: { available: boolean }): Promise<void> {
  throw notImplemented('kernel list');
}

export async function kernelPull(_ctx: CliContext, name: string): Promise<void> {
  throw notImplemented(`kernel pull ${name}`);
}

export async function kernelDelete(_ctx: CliContext, names: string[]): Promise<void> {
  throw notImplemented(`kernel delete ${names.join(' ')}`);
}
