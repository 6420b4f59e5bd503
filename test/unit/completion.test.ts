import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { planCompletion, resolvePlan, type CompletionNode } from '../../src/cli/completion.js';

const node = (name: string, extra: Partial<CompletionNode> = {}): CompletionNode => ({
  name,
  aliases: [],
  hidden: false,
  options: [],
  args: [],
  children: [],
  ...extra,
});

const tree = node('banger', {
  options: [{ flags: ['--json'], takesValue: false }],
  children: [
    node('vm', {
      children: [
        node('run', {
          args: [{ name: 'path', variadic: false }],
          options: [
            { flags: ['--image'], takesValue: true, valueName: 'image' },
            { flags: ['--rm'], takesValue: false },
          ],
        }),
        node('stop', { args: [{ name: 'vm', variadic: true }] }),
        node('delete', { aliases: ['rm'], args: [{ name: 'vm', variadic: true }] }),
      ],
    }),
    node('completion', { args: [{ name: 'shell', variadic: false, choices: ['bash', 'zsh'] }] }),
    node('__complete', { hidden: true }),
  ],
});

const names = { vms: ['dev', 'demo', 'prod'], images: ['debian-bookworm'], kernels: [] };
const complete = (...words: string[]) => resolvePlan(planCompletion({ tree, words }), names);

describe('completion planner', () => {
  test('top-level commands, hidden ones excluded', () => {
    assert.deepEqual(complete(''), ['vm', 'completion']);
  });
  test('variadic VM names after a lifecycle verb, also via alias', () => {
    assert.deepEqual(complete('vm', 'stop', 'de'), ['dev', 'demo']);
    assert.deepEqual(complete('vm', 'stop', 'dev', 'p'), ['prod']);
    assert.deepEqual(complete('vm', 'rm', ''), ['dev', 'demo', 'prod']);
  });
  test('option values complete by their value name', () => {
    assert.deepEqual(complete('vm', 'run', '--image', ''), ['debian-bookworm']);
    assert.deepEqual(planCompletion({ tree, words: ['vm', 'run', '--image', ''] }).kind, 'names');
  });
  test('options, including globals below the root', () => {
    assert.deepEqual(complete('vm', 'run', '--'), ['--image', '--rm', '--json', '--help']);
  });
  test('choices and files', () => {
    assert.deepEqual(complete('completion', 'z'), ['zsh']);
    assert.equal(planCompletion({ tree, words: ['vm', 'run', ''] }).kind, 'files');
    assert.equal(planCompletion({ tree, words: ['vm', 'run', '--', 'ls', ''] }).kind, 'files');
  });
  test('option values are skipped when counting positionals', () => {
    assert.equal(planCompletion({ tree, words: ['vm', 'run', '--image', 'x', ''] }).kind, 'files');
  });
});
