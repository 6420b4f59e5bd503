import type { z } from 'zod';
import type { ProgressSink } from '../api/events.js';
import type {
  ImageBuildRequestSchema,
  ImagePullRequestSchema,
  ImageRegisterRequestSchema,
  ImageView,
} from '../api/schemas/images.js';
import type { ServiceDeps } from '../daemon/services.js';
import { notImplemented } from '../errors.js';
import type { ImageRecord } from '../store/images.js';
import type { KernelService } from './kernel/service.js';

export type ImagePullRequest = z.output<typeof ImagePullRequestSchema>;
export type ImageBuildRequest = z.output<typeof ImageBuildRequestSchema>;
export type ImageRegisterRequest = z.output<typeof ImageRegisterRequestSchema>;

/** Images: catalog builds, OCI pulls, local builds, registration, deletion. */
export class ImageService {
  constructor(
    readonly deps: ServiceDeps,
    readonly kernels: KernelService,
  ) {}

  list(): ImageView[] {
    throw notImplemented('image list');
  }

  catalog(): { name: string; description: string; installed: boolean; default: boolean }[] {
    throw notImplemented('image list');
  }

  show(name: string): ImageView {
    throw notImplemented(`image show ${name}`);
  }

  /** Find an image by name (or id). */
  get(ref: string): ImageRecord | undefined {
    return this.deps.store.images.byName(ref) ?? this.deps.store.images.get(ref);
  }

  /** Return the image, pulling it from the catalog when missing (used by vm create/run). */
  async ensure(name: string, _emit: ProgressSink, _signal?: AbortSignal): Promise<ImageRecord> {
    const found = this.get(name);
    if (found) return found;
    throw notImplemented(`image pull ${name}`);
  }

  async pull(
    req: ImagePullRequest,
    _emit: ProgressSink,
    _signal?: AbortSignal,
  ): Promise<ImageView> {
    const found = this.get(req.ref);
    if (found) return { ...found, kernel: found.kernelName, allocatedBytes: null };
    throw notImplemented(`image pull ${req.ref}`);
  }

  async build(
    req: ImageBuildRequest,
    _emit: ProgressSink,
    _signal?: AbortSignal,
  ): Promise<ImageView> {
    throw notImplemented(`image build ${req.name}`);
  }

  register(req: ImageRegisterRequest): ImageView {
    throw notImplemented(`image register ${req.name}`);
  }

  async promote(name: string, _emit: ProgressSink, _signal?: AbortSignal): Promise<ImageView> {
    throw notImplemented(`image promote ${name}`);
  }

  delete(name: string): { deleted: string[] } {
    throw notImplemented(`image delete ${name}`);
  }
}
