/**
 * Deterministic, platform-independent hashing and random numbers for the data layer
 * (splits and shuffles must be identical on every machine and across resumes).
 *
 * @module
 */
import { createHash } from "node:crypto";

/** sha256 hex digest of a string or bytes. */
export function sha256Hex(data: string | Uint8Array): string {
  return createHash("sha256").update(data).digest("hex");
}

/** A number in [0, 1) from sha256(`key`): 48 bits of the digest. */
export function hashUnit(key: string): number {
  const h = createHash("sha256").update(key).digest();
  return (h.readUInt32BE(0) * 65536 + h.readUInt16BE(4)) / 2 ** 48;
}

/** xoshiro128** seeded from sha256(`key`); `next()` returns a uint32. */
export class Rng {
  private s: Uint32Array;
  constructor(key: string) {
    const h = createHash("sha256").update(key).digest();
    this.s = new Uint32Array([h.readUInt32LE(0), h.readUInt32LE(4), h.readUInt32LE(8), h.readUInt32LE(12)]);
    if (this.s.every((x) => x === 0)) this.s[0] = 1;
  }
  next(): number {
    const s = this.s;
    let s0 = s[0]!, s1 = s[1]!, s2 = s[2]!, s3 = s[3]!;
    const result = Math.imul(rotl(Math.imul(s1, 5) >>> 0, 7), 9) >>> 0;
    const t = (s1 << 9) >>> 0;
    s2 ^= s0;
    s3 ^= s1;
    s1 ^= s2;
    s0 ^= s3;
    s2 ^= t;
    s3 = rotl(s3 >>> 0, 11);
    s[0] = s0;
    s[1] = s1;
    s[2] = s2;
    s[3] = s3;
    return result;
  }
  /** Uniform integer in [0, n) (n <= 2^32). */
  below(n: number): number {
    return Math.floor((this.next() / 4294967296) * n);
  }
}

function rotl(x: number, k: number): number {
  return ((x << k) | (x >>> (32 - k))) >>> 0;
}

/** The permutation of [0, n) for `key` (Fisher-Yates). */
export function permutation(n: number, key: string): Uint32Array {
  const p = new Uint32Array(n);
  for (let i = 0; i < n; i++) p[i] = i;
  const rng = new Rng(key);
  for (let i = n - 1; i > 0; i--) {
    const j = rng.below(i + 1);
    const t = p[i]!;
    p[i] = p[j]!;
    p[j] = t;
  }
  return p;
}
