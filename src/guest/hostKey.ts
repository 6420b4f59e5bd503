/**
 * A restored VM's new ed25519 SSH host key, made on the host: the guest agent
 * writes it in OpenSSH's format (`set-identity` with `hostKeySeed` and
 * `hostKeyPublic`) instead of running ssh-keygen in a guest that may be
 * emulated (docs/guest-agent.md, "Identity after a restore").
 */
import { createPrivateKey, generateKeyPairSync, type KeyObject } from 'node:crypto';

export interface Ed25519HostKey {
  /** The 32-byte private seed, 64 lowercase hex characters. Secret: never log it. */
  seedHex: string;
  /** The 32-byte public key, 64 lowercase hex characters. */
  publicHex: string;
  /** The OpenSSH public key line, `ssh-ed25519 <base64>` (no comment), as the guest's .pub file has it. */
  publicLine: string;
}

/** PKCS#8 DER of an ed25519 private key, up to its 32-byte seed (RFC 8410). */
const PKCS8_ED25519_PREFIX = Buffer.from('302e020100300506032b657004220420', 'hex');

/** An SSH wire "string": a 32-bit big-endian length, then the bytes. */
function sshString(b: Buffer): Buffer {
  const len = Buffer.alloc(4);
  len.writeUInt32BE(b.length);
  return Buffer.concat([len, b]);
}

/** `ssh-ed25519 <base64 of (string "ssh-ed25519", string pub)>` for a 32-byte public key. */
export function ed25519PublicLine(pub: Buffer): string {
  if (pub.length !== 32) throw new Error(`an ed25519 public key is 32 bytes, not ${pub.length}`);
  const blob = Buffer.concat([sshString(Buffer.from('ssh-ed25519')), sshString(pub)]);
  return `ssh-ed25519 ${blob.toString('base64')}`;
}

/**
 * A fresh ed25519 key pair from the host's CSPRNG, or the pair of a given
 * 32-byte seed (deterministic: tests).
 */
export function ed25519HostKey(seed?: Buffer): Ed25519HostKey {
  let privateKey: KeyObject;
  if (seed) {
    if (seed.length !== 32) throw new Error(`an ed25519 seed is 32 bytes, not ${seed.length}`);
    privateKey = createPrivateKey({
      key: Buffer.concat([PKCS8_ED25519_PREFIX, seed]),
      format: 'der',
      type: 'pkcs8',
    });
  } else {
    privateKey = generateKeyPairSync('ed25519').privateKey;
  }
  const jwk = privateKey.export({ format: 'jwk' });
  const d = Buffer.from(jwk.d ?? '', 'base64url');
  const x = Buffer.from(jwk.x ?? '', 'base64url');
  if (d.length !== 32 || x.length !== 32)
    throw new Error('node:crypto made an unexpected ed25519 key');
  return {
    seedHex: d.toString('hex'),
    publicHex: x.toString('hex'),
    publicLine: ed25519PublicLine(x),
  };
}
