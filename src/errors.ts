/**
 * The one error module. Every failure a user can meet is a BangerError: a stable
 * code, a one-line message naming what failed and on what, and a hint saying what
 * to do. The CLI prints `error: <message>: <hint>` and exits with `exitCode`; the
 * daemon sends the same fields over the wire so both sides agree.
 */

export type ErrorCode =
  | 'usage'
  | 'config_invalid'
  | 'not_found'
  | 'conflict'
  | 'ambiguous'
  | 'invalid_request'
  | 'bad_json'
  | 'body_too_large'
  | 'route_not_found'
  | 'method_not_allowed'
  | 'api_version_unsupported'
  | 'version_mismatch'
  | 'daemon_unavailable'
  | 'daemon_busy'
  | 'daemon_running'
  | 'shutting_down'
  | 'not_implemented'
  | 'precondition'
  | 'permission'
  | 'tool_missing'
  | 'tool_failed'
  | 'timeout'
  | 'cancelled'
  | 'vmm_failed'
  | 'boot_failed'
  | 'network'
  | 'registry'
  | 'image_invalid'
  | 'internal';

export interface ErrorShape {
  code: ErrorCode;
  message: string;
  hint?: string;
  details?: Record<string, unknown>;
}

const httpStatusByCode: Partial<Record<ErrorCode, number>> = {
  usage: 400,
  invalid_request: 400,
  bad_json: 400,
  config_invalid: 400,
  body_too_large: 413,
  not_found: 404,
  route_not_found: 404,
  api_version_unsupported: 404,
  method_not_allowed: 405,
  conflict: 409,
  ambiguous: 409,
  version_mismatch: 409,
  precondition: 412,
  daemon_busy: 409,
  shutting_down: 503,
  not_implemented: 501,
  permission: 403,
};

export class BangerError extends Error {
  readonly code: ErrorCode;
  readonly hint?: string;
  readonly details?: Record<string, unknown>;
  readonly exitCode: number;

  constructor(
    code: ErrorCode,
    message: string,
    opts: {
      hint?: string;
      details?: Record<string, unknown>;
      cause?: unknown;
      exitCode?: number;
    } = {},
  ) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = 'BangerError';
    this.code = code;
    this.hint = opts.hint;
    this.details = opts.details;
    this.exitCode = opts.exitCode ?? (code === 'usage' ? 2 : 1);
  }

  get httpStatus(): number {
    return httpStatusByCode[this.code] ?? 500;
  }

  /** The single line the CLI prints (without the `error: ` prefix). */
  get line(): string {
    return this.hint ? `${this.message}: ${this.hint}` : this.message;
  }

  toJSON(): ErrorShape {
    const out: ErrorShape = { code: this.code, message: this.message };
    if (this.hint) out.hint = this.hint;
    if (this.details) out.details = this.details;
    return out;
  }

  static fromJSON(shape: ErrorShape): BangerError {
    return new BangerError(shape.code, shape.message, { hint: shape.hint, details: shape.details });
  }
}

export const usageError = (message: string, hint?: string): BangerError =>
  new BangerError('usage', message, { hint });

export const notFound = (what: string, ref: string, hint?: string): BangerError =>
  new BangerError('not_found', `${what} '${ref}' not found`, { hint });

export const notImplemented = (command: string): BangerError =>
  new BangerError('not_implemented', `'${command}' is not implemented yet`, {
    hint: 'see the README section "Status" for what is built',
  });

export const isBangerError = (e: unknown): e is BangerError => e instanceof BangerError;

/** What this module reads of a schema (zod) issue; errors.ts does not load zod. */
export interface SchemaIssue {
  path: PropertyKey[];
  message: string;
}

/**
 * A failed schema check as one line: `invalid <field> '<value>'[ <where>]`, with
 * the schema's message (phrased as the fix) as the hint. Used for bodies the
 * client sends, requests the daemon receives and any schema error that escapes.
 */
export function schemaError(
  issues: readonly SchemaIssue[],
  opts: {
    code?: ErrorCode;
    /** The value that was checked: the offending field's value is quoted from it. */
    data?: unknown;
    /** User words for field paths, e.g. { name: 'VM name' }. */
    labels?: Record<string, string>;
    /** Appended to the message, e.g. 'in the body of POST /v1/vms'. */
    where?: string;
  } = {},
): BangerError {
  const issue = issues[0] ?? { path: [], message: 'invalid' };
  const key = issue.path.map(String).join('.');
  const label = opts.labels?.[key] ?? (key || 'value');
  let value: unknown = opts.data;
  for (const p of issue.path) value = (value as Record<PropertyKey, unknown> | undefined)?.[p];
  const shown =
    key && ['string', 'number', 'boolean'].includes(typeof value)
      ? ` '${String(value).slice(0, 80)}'`
      : '';
  const hint = issue.message.charAt(0).toLowerCase() + issue.message.slice(1);
  return new BangerError(
    opts.code ?? 'invalid_request',
    `invalid ${label}${shown}${opts.where ? ` ${opts.where}` : ''}`,
    { hint, details: issues.length > 1 ? { issues: issues.length } : undefined },
  );
}

const isSchemaError = (e: unknown): e is Error & { issues: SchemaIssue[] } =>
  e instanceof Error && e.name === 'ZodError' && Array.isArray((e as { issues?: unknown }).issues);

/** Turn anything thrown into a BangerError, keeping the original as cause. */
export function toBangerError(e: unknown): BangerError {
  if (e instanceof BangerError) return e;
  if (isSchemaError(e)) {
    const err = schemaError(e.issues, { code: 'internal' });
    return new BangerError('internal', err.message, { hint: err.hint, cause: e });
  }
  if (e instanceof Error) {
    const errno = e as NodeJS.ErrnoException;
    if (errno.code === 'EACCES' || errno.code === 'EPERM') {
      return new BangerError('permission', errno.message, {
        cause: e,
        hint: 'check file ownership and permissions',
      });
    }
    return new BangerError('internal', e.message, {
      cause: e,
      hint: 'rerun with --debug for details',
    });
  }
  return new BangerError('internal', String(e), { hint: 'rerun with --debug for details' });
}

export const isErrno = (e: unknown, ...codes: string[]): e is NodeJS.ErrnoException =>
  e instanceof Error && codes.includes((e as NodeJS.ErrnoException).code ?? '');
