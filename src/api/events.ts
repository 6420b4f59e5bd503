import { z } from 'zod';

/**
 * Progress events of long operations, streamed as newline-delimited JSON. The
 * same events feed the CLI's progress bars, plain logs and (later) the TUI.
 * A stream always ends with exactly one `result` or `error` event.
 */

export const ErrorShapeSchema = z.object({
  code: z.string(),
  message: z.string(),
  hint: z.string().optional(),
  details: z.record(z.string(), z.unknown()).optional(),
});

export const StepEventSchema = z.object({
  type: z.literal('step'),
  id: z.string(),
  label: z.string(),
  state: z.enum(['start', 'done', 'fail', 'skip']),
  detail: z.string().optional(),
  /** Milliseconds the step took, on done/fail. */
  ms: z.number().optional(),
});

export const ProgressEventSchema = z.object({
  type: z.literal('progress'),
  id: z.string(),
  current: z.number(),
  total: z.number().optional(),
  unit: z.enum(['bytes', 'items']).optional(),
  /** A second count shown beside the first, e.g. files beside bytes. */
  items: z
    .object({ current: z.number(), total: z.number().optional(), label: z.string() })
    .optional(),
});

export const LogEventSchema = z.object({
  type: z.literal('log'),
  level: z.enum(['debug', 'info', 'warn', 'error']),
  message: z.string(),
});

/** A partial result (e.g. one doctor check, one per-VM outcome) as soon as it is known. */
export const ItemEventSchema = z.object({ type: z.literal('item'), data: z.unknown() });

export const ResultEventSchema = z.object({ type: z.literal('result'), data: z.unknown() });
export const ErrorEventSchema = z.object({ type: z.literal('error'), error: ErrorShapeSchema });

export const StreamEventSchema = z.discriminatedUnion('type', [
  StepEventSchema,
  ProgressEventSchema,
  LogEventSchema,
  ItemEventSchema,
  ResultEventSchema,
  ErrorEventSchema,
]);

export type StepEvent = z.infer<typeof StepEventSchema>;
export type ProgressEvent = z.infer<typeof ProgressEventSchema>;
export type LogEvent = z.infer<typeof LogEventSchema>;
export type StreamEvent = z.infer<typeof StreamEventSchema>;
/** What an operation may emit while it runs (the terminal events are the server's job). */
export type ProgressSink = (event: Exclude<StreamEvent, { type: 'result' | 'error' }>) => void;

export { NDJSON } from './endpoints.js';
