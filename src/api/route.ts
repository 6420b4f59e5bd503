import { z } from 'zod';
import { endpoints, type Method, type RouteId, type RouteKind } from './endpoints.js';

export { buildPath, matchPath, type Method, type RouteKind } from './endpoints.js';

/**
 * A route of the daemon API, shared by client and server: its endpoint
 * (method, path, kind, from endpoints.ts) and the schemas of params, query,
 * body and response. The daemon validates requests and answers against these
 * objects; the client validates the bodies it sends with the same ones.
 */
export interface RouteDef<
  P extends z.ZodType = z.ZodType,
  Q extends z.ZodType = z.ZodType,
  B extends z.ZodType = z.ZodType,
  R extends z.ZodType = z.ZodType,
> {
  id: string;
  method: Method;
  path: string;
  kind: RouteKind;
  params: P;
  query: Q;
  body: B;
  response: R;
  /** Accepted even when the client's version differs from the daemon's. */
  versionExempt?: boolean;
}

const empty = z.object({}).strict();

/** The route `id` of endpoints.ts with its schemas (an omitted schema accepts nothing / anything for responses). */
export function route<
  P extends z.ZodType = typeof empty,
  Q extends z.ZodType = typeof empty,
  B extends z.ZodType = typeof empty,
  R extends z.ZodType = z.ZodUnknown,
>(
  id: RouteId,
  schemas: { params?: P; query?: Q; body?: B; response?: R } = {},
): RouteDef<P, Q, B, R> {
  const e: { method: Method; path: string; kind?: RouteKind; versionExempt?: boolean } =
    endpoints[id];
  return {
    id,
    method: e.method,
    path: e.path,
    kind: e.kind ?? 'json',
    params: (schemas.params ?? empty) as P,
    query: (schemas.query ?? empty) as Q,
    body: (schemas.body ?? empty) as B,
    response: (schemas.response ?? z.unknown()) as R,
    versionExempt: e.versionExempt,
  };
}

export type Params<D> = D extends RouteDef<infer P> ? z.input<P> : never;
export type Query<D> = D extends RouteDef<z.ZodType, infer Q> ? z.input<Q> : never;
export type Body<D> = D extends RouteDef<z.ZodType, z.ZodType, infer B> ? z.input<B> : never;
export type Response<D> =
  D extends RouteDef<z.ZodType, z.ZodType, z.ZodType, infer R> ? z.output<R> : never;

export interface CallInput<D extends RouteDef> {
  params?: Params<D>;
  query?: Query<D>;
  body?: Body<D>;
}

/** Query strings are all strings on the wire; these helpers accept them. */
export const qBool = z
  .union([z.boolean(), z.enum(['1', '0', 'true', 'false'])])
  .transform((v) => v === true || v === '1' || v === 'true');
export const qInt = z.union([z.number().int(), z.string().regex(/^\d+$/).transform(Number)]);
