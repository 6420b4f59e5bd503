import fs from 'node:fs';
import path from 'node:path';
import { pino, type Level, type Logger as PinoLogger } from 'pino';

/** Vendor boundary for logging: JSON lines, one per event, via pino. */
export type Logger = PinoLogger;

export function createFileLogger(file: string, level: Level): Logger {
  fs.mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
  const dest = pino.destination({ dest: file, sync: true, mkdir: true });
  return pino(
    { level, base: { pid: process.pid }, timestamp: pino.stdTimeFunctions.isoTime },
    dest,
  );
}

export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}
