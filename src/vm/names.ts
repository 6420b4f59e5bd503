import { randomBytes, randomInt } from 'node:crypto';
import { BangerError } from '../errors.js';

/** VM names and ids. Names are what users type; ids are stable and unique. */

export const VM_NAME_RE = /^[a-z0-9][a-z0-9-]{0,63}$/;

export function validateVmName(name: string): string {
  if (!VM_NAME_RE.test(name)) {
    throw new BangerError('usage', `invalid VM name '${name}'`, {
      hint: 'use 1-64 characters: lowercase letters, digits and dashes, starting with a letter or digit',
    });
  }
  return name;
}

/** 16 lowercase hex characters; shown shortened to 12 like Docker. */
export const newVmId = (): string => randomBytes(8).toString('hex');
export const shortId = (id: string): string => id.slice(0, 12);

const ADJECTIVES = [
  'brave',
  'calm',
  'eager',
  'fancy',
  'gentle',
  'happy',
  'jolly',
  'kind',
  'lively',
  'merry',
  'nimble',
  'proud',
  'quick',
  'quiet',
  'rapid',
  'shiny',
  'silly',
  'snappy',
  'sunny',
  'swift',
  'tidy',
  'witty',
  'zesty',
  'bold',
  'crisp',
  'daring',
  'fuzzy',
  'grand',
  'keen',
  'lucky',
];
const NOUNS = [
  'otter',
  'falcon',
  'badger',
  'lynx',
  'heron',
  'panda',
  'koala',
  'gecko',
  'bison',
  'moose',
  'walrus',
  'puffin',
  'beaver',
  'cobra',
  'dingo',
  'ferret',
  'ibex',
  'jackal',
  'lemur',
  'marmot',
  'newt',
  'ocelot',
  'quokka',
  'raven',
  'stoat',
  'tapir',
  'vole',
  'wombat',
  'yak',
  'zebra',
];

/** A friendly name not in `taken`, like `swift-otter` (a number is added on collisions). */
export function generateVmName(
  taken: Set<string>,
  pick: (n: number) => number = randomInt,
): string {
  for (let i = 0; i < 50; i++) {
    const name = `${ADJECTIVES[pick(ADJECTIVES.length)]}-${NOUNS[pick(NOUNS.length)]}`;
    if (!taken.has(name)) return name;
  }
  for (let n = 2; ; n++) {
    const name = `${ADJECTIVES[pick(ADJECTIVES.length)]}-${NOUNS[pick(NOUNS.length)]}-${n}`;
    if (!taken.has(name)) return name;
  }
}
