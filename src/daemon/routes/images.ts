import { routes } from '../../api/routes.js';
import type { ImageService } from '../../image/service.js';
import type { KernelService } from '../../image/kernel/service.js';
import type { ApiServer } from '../http.js';

/** Kernel and image routes → their services. */
export function registerImageRoutes(
  server: ApiServer,
  kernels: KernelService,
  images: ImageService,
): void {
  server.json(routes.kernelList, () => ({ kernels: kernels.list() }));
  server.json(routes.kernelCatalog, () => ({ kernels: kernels.catalog() }));
  server.stream(routes.kernelPull, ({ body, signal }, emit) =>
    kernels.pull(body.name, emit, signal),
  );
  server.json(routes.kernelDelete, ({ params }) => kernels.delete(params.name));

  server.json(routes.imageList, () => ({ images: images.list() }));
  server.json(routes.imageCatalog, () => ({ images: images.catalog() }));
  server.json(routes.imageShow, ({ params }) => images.show(params.name));
  server.stream(routes.imagePull, ({ body, signal }, emit) => images.pull(body, emit, signal));
  server.stream(routes.imageBuild, ({ body, signal }, emit) => images.build(body, emit, signal));
  server.json(routes.imageRegister, ({ body }) => images.register(body));
  server.stream(routes.imagePromote, ({ params, signal }, emit) =>
    images.promote(params.name, emit, signal),
  );
  server.json(routes.imageDelete, ({ params }) => images.delete(params.name));
}
