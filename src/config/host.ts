import os from 'node:os';
import type { HostFacts } from './vmDefaults.js';

/** Read the host facts the sizing heuristics need. */
export function readHostFacts(): HostFacts {
  return { cpus: os.availableParallelism?.() ?? os.cpus().length, memoryBytes: os.totalmem() };
}
