import { z } from 'zod';

/**
 * A route of the daemon API, shared by client and server: method, path pattern,
 * and the schemas of params, query, body and response. Both sides validate
 * against the same objects, so the wire contract lives in one place.
 */
export type Method = 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE';

/** How the response travels: one JSON body, NDJSON progress events, raw text, or an upgraded byte stream. */
export type RouteKind = 'json' | 'stream' | 'text' | 'upgrade';

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

export function route<
  P extends z.ZodType = typeof empty,
  Q extends z.ZodType = typeof empty,
  B extends z.ZodType = typeof empty,
  R extends z.ZodType = z.ZodUnknown,
>(def: {
  id: string;
  method: Method;
  path: string;
  kind?: RouteKind;
  params?: P;
  query?: Q;
  body?: B;
  response?: R;
  versionExempt?: boolean;
}): RouteDef<P, Q, B, R> {
  return {
    id: def.id,
    method: def.method,
    path: def.path,
    kind: def.kind ?? 'json',
    params: (def.params ?? empty) as P,
    query: (def.query ?? empty) as Q,
    body: (def.body ?? empty) as B,
    response: (def.response ?? z.unknown()) as R,
    versionExempt: def.versionExempt,
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

/** Fill a path pattern: '/v1/vms/:ref' + {ref: 'a b'} → '/v1/vms/a%20b'. */
export function buildPath(pattern: string, params: Record<string, unknown> = {}): string {
  return pattern.replace(/:([a-zA-Z]+)/g, (_, name: string) => {
    const v = params[name];
    if (v === undefined) throw new Error(`missing path parameter ${name} for ${pattern}`);
    return encodeURIComponent(String(v));
  });
}

/** Match a concrete path against a pattern; returns decoded params or undefined. */
export function matchPath(pattern: string, pathname: string): Record<string, string> | undefined {
  const pp = pattern.split('/');
  const ap = pathname.split('/');
  if (pp.length !== ap.length) return undefined;
  const out: Record<string, string> = {};
  for (let i = 0; i < pp.length; i++) {
    const p = pp[i]!;
    const a = ap[i]!;
    if (p.startsWith(':')) {
      if (a.length === 0) return undefined;
      try {
        out[p.slice(1)] = decodeURIComponent(a);
      } catch {
        return undefined;
      }
    } else if (p !== a) return undefined;
  }
  return out;
}

/** Query strings are all strings on the wire; these helpers accept them. */
export const qBool = z
  .union([z.boolean(), z.enum(['1', '0', 'true', 'false'])])
  .transform((v) => v === true || v === '1' || v === 'true');
export const qInt = z.union([z.number().int(), z.string().regex(/^\d+$/).transform(Number)]);
