import { endpoints } from '../api/endpoints.js';

/**
 * The views of the TUI, in tab order. A view is listed when the daemon API
 * it shows exists in this build: the snapshots view joins with one entry
 * (`{ id: 'snapshots', title: 'Snapshots', key: '4', route: 'snapshotList' }`)
 * plus its table, once the snapshot routes land.
 */
export type ViewId = 'vms' | 'images' | 'kernels';

export interface ViewDef {
  id: ViewId;
  title: string;
  /** The digit that jumps to it. */
  key: string;
  /** The route that lists its rows; the view is hidden when the API lacks it. */
  route: string;
}

const ALL_VIEWS: readonly ViewDef[] = [
  { id: 'vms', title: 'VMs', key: '1', route: 'vmList' },
  { id: 'images', title: 'Images', key: '2', route: 'imageList' },
  { id: 'kernels', title: 'Kernels', key: '3', route: 'kernelList' },
];

/** Whether this build's API has a route (features that land later are found this way). */
export const hasRoute = (id: string): boolean => Object.hasOwn(endpoints, id);

export const VIEWS: readonly ViewDef[] = ALL_VIEWS.filter((v) => hasRoute(v.route));
