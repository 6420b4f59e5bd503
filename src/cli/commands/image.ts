import { routes } from '../../api/routes.js';
import { notImplemented } from '../../errors.js';
import type { CliContext } from '../context.js';

export async function imageList(_ctx: CliContext): Promise<void> {
  throw notImplemented('image list');
}

export async function imageShow(_ctx: CliContext, name: string): Promise<void> {
  throw notImplemented(`image show ${name}`);
}

export async function imageDelete(_ctx: CliContext, names: string[]): Promise<void> {
  throw notImplemented(`image delete ${names.join(' ')}`);
}

export async function imagePull(
  ctx: CliContext,
  ref: string,
  opts: { name?: string; kernelRef?: string; insecure?: boolean },
): Promise<void> {
  const img = await ctx.stream(routes.imagePull, { body: { ref, ...opts } });
  if (ctx.flags.json) ctx.printJson(img);
  else ctx.print(img.name);
}

export async function imageBuild(
  _ctx: CliContext,
  opts: { name: string; fromImage: string; packages?: string; docker?: boolean },
): Promise<void> {
  throw notImplemented(`image build ${opts.name}`);
}

export async function imageRegister(
  _ctx: CliContext,
  opts: {
    name: string;
    rootfs: string;
    kernelRef?: string;
    kernel?: string;
    initrd?: string;
    workSeed?: string;
  },
): Promise<void> {
  throw notImplemented(`image register ${opts.name}`);
}

export async function imagePromote(_ctx: CliContext, name: string): Promise<void> {
  throw notImplemented(`image promote ${name}`);
}
