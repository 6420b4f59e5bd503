/**
 * OpenSSH's unencrypted private key file ("openssh-key-v1", PROTOCOL.key in
 * OpenSSH's sources) for an ed25519 key, written independently of the guest
 * agent's C so tests can hold its output to the format byte for byte.
 */

function u32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n);
  return b;
}

function str(b: Buffer | string): Buffer {
  const bytes = typeof b === 'string' ? Buffer.from(b) : b;
  return Buffer.concat([u32(bytes.length), bytes]);
}

const BEGIN = '-----BEGIN OPENSSH PRIVATE KEY-----';
const END = '-----END OPENSSH PRIVATE KEY-----';

/** The armored private key file of seed/pub (32 bytes each), with the given check int and comment. */
export function opensshEd25519PrivateKey(
  seed: Buffer,
  pub: Buffer,
  checkInt: number,
  comment = '',
): string {
  const blob = Buffer.concat([str('ssh-ed25519'), str(pub)]);
  const body = Buffer.concat([
    u32(checkInt),
    u32(checkInt),
    str('ssh-ed25519'),
    str(pub),
    str(Buffer.concat([seed, pub])),
    str(comment),
  ]);
  const pad = Buffer.from(Array.from({ length: (8 - (body.length % 8)) % 8 }, (_, i) => i + 1));
  const file = Buffer.concat([
    Buffer.from('openssh-key-v1\0'),
    str('none'),
    str('none'),
    str(''),
    u32(1),
    str(blob),
    str(Buffer.concat([body, pad])),
  ]);
  const b64 = file.toString('base64');
  const lines = b64.match(/.{1,70}/g) ?? [];
  return [BEGIN, ...lines, END, ''].join('\n');
}

/** The first check int of an armored openssh-key-v1 file with one unencrypted key. */
export function opensshCheckInt(text: string): number {
  const b64 = text.replace(BEGIN, '').replace(END, '').replace(/\s+/g, '');
  const file = Buffer.from(b64, 'base64');
  let o = 'openssh-key-v1\0'.length;
  const skip = (): void => {
    o += 4 + file.readUInt32BE(o);
  };
  skip(); // cipher
  skip(); // kdf
  skip(); // kdf options
  o += 4; // number of keys
  skip(); // public key blob
  o += 4; // length of the private section
  return file.readUInt32BE(o);
}
