// HMAC-SHA256 (RFC 2104 over FIPS 180-4's SHA-256) of short texts under one fixed key, for the
// request metadata's keyed hashes of client addresses and networks: with each viewer on an
// address of its own, two of them a vote. node:crypto's createHmac costs ~4-5 µs for such a
// text, nearly all of it per call (a native object, the key's two blocks hashed again each time);
// here the key's inner and outer blocks are hashed once, and a short text costs two compressions
// in JavaScript, ~1 µs (bench/README.md, "Sixteenth look"). Long texts gain nothing (the
// compressions dominate) and go to node:crypto. hmacSha256.test.ts holds both paths to
// node:crypto's answers. SHA-256 has no table lookups that depend on the data, so this is no less
// constant-time than OpenSSL's.
import { createHash, createHmac } from 'node:crypto';

const roundConstants = new Int32Array([
  0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
  0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
  0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
  0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
  0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
  0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
  0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
  0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
]);
const initialState = new Int32Array([0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19]);
const blockBytes = 64;
const digestBytes = 32;
/** Texts up to this many UTF-8 bytes are hashed here (a client address or network is < 60). */
export const hmacSha256ShortTextBytesMax = 183;
/** The text, its 0x80 and its 8-byte length fit in this many blocks. */
const scratchBlocks = Math.ceil((hmacSha256ShortTextBytesMax + 9) / blockBytes);

/** The message schedule, shared: a compression runs to its end before another starts. */
const schedule = new Int32Array(64);

/** One SHA-256 compression of `block[offset, offset + 64)` into `state`. */
function compress(state: Int32Array, block: Uint8Array, offset: number): void {
  const w = schedule;
  for (let i = 0; i < 16; i++) {
    const j = offset + i * 4;
    w[i] = (block[j]! << 24) | (block[j + 1]! << 16) | (block[j + 2]! << 8) | block[j + 3]!;
  }
  for (let i = 16; i < 64; i++) {
    const w15 = w[i - 15]!;
    const w2 = w[i - 2]!;
    const s0 = ((w15 >>> 7) | (w15 << 25)) ^ ((w15 >>> 18) | (w15 << 14)) ^ (w15 >>> 3);
    const s1 = ((w2 >>> 17) | (w2 << 15)) ^ ((w2 >>> 19) | (w2 << 13)) ^ (w2 >>> 10);
    w[i] = (w[i - 16]! + s0 + w[i - 7]! + s1) | 0;
  }
  let a = state[0]!, b = state[1]!, c = state[2]!, d = state[3]!;
  let e = state[4]!, f = state[5]!, g = state[6]!, h = state[7]!;
  for (let i = 0; i < 64; i++) {
    const s1 = ((e >>> 6) | (e << 26)) ^ ((e >>> 11) | (e << 21)) ^ ((e >>> 25) | (e << 7));
    const t1 = (h + s1 + ((e & f) ^ (~e & g)) + roundConstants[i]! + w[i]!) | 0;
    const s0 = ((a >>> 2) | (a << 30)) ^ ((a >>> 13) | (a << 19)) ^ ((a >>> 22) | (a << 10));
    const t2 = (s0 + ((a & b) ^ (a & c) ^ (b & c))) | 0;
    h = g;
    g = f;
    f = e;
    e = (d + t1) | 0;
    d = c;
    c = b;
    b = a;
    a = (t1 + t2) | 0;
  }
  state[0] = (state[0]! + a) | 0;
  state[1] = (state[1]! + b) | 0;
  state[2] = (state[2]! + c) | 0;
  state[3] = (state[3]! + d) | 0;
  state[4] = (state[4]! + e) | 0;
  state[5] = (state[5]! + f) | 0;
  state[6] = (state[6]! + g) | 0;
  state[7] = (state[7]! + h) | 0;
}

/** Appends SHA-256's padding for a message of `messageBytes` after `used` bytes of `block`; returns the blocks' bytes. */
function pad(block: Uint8Array, used: number, messageBytes: number): number {
  const end = Math.ceil((used + 9) / blockBytes) * blockBytes;
  block[used] = 0x80;
  block.fill(0, used + 1, end - 4);
  // The length in bits as a 64-bit big-endian number; short texts stay far below 2^32 bits.
  const bits = messageBytes * 8;
  block[end - 4] = bits >>> 24;
  block[end - 3] = bits >>> 16;
  block[end - 2] = bits >>> 8;
  block[end - 1] = bits;
  return end;
}

/**
 * Returns the HMAC-SHA256 of a text (its UTF-8 bytes, as createHmac's update(text) takes it)
 * under `key`, the first `bytes` bytes of it (1-32) in a new Buffer.
 */
export function hmacSha256(key: string | Uint8Array): (text: string, bytes?: number) => Buffer {
  let keyBytes: Uint8Array = typeof key === 'string' ? Buffer.from(key, 'utf8') : key;
  // RFC 2104: a key longer than the block is hashed first.
  if (keyBytes.length > blockBytes) keyBytes = createHash('sha256').update(keyBytes).digest();
  const keyBlock = new Uint8Array(blockBytes);
  keyBlock.set(keyBytes);
  const innerKeyState = initialState.slice();
  const outerKeyState = initialState.slice();
  compress(innerKeyState, keyBlock.map((x) => x ^ 0x36), 0);
  compress(outerKeyState, keyBlock.map((x) => x ^ 0x5c), 0);
  const longKey = Buffer.from(keyBytes);

  const scratch = Buffer.alloc(scratchBlocks * blockBytes);
  const state = new Int32Array(8);
  return (text, bytes = digestBytes) => {
    if (!(Number.isInteger(bytes) && bytes >= 1 && bytes <= digestBytes)) throw new Error(`bytes must be 1-32, got ${bytes}`);
    // A UTF-16 unit is at most three UTF-8 bytes: only a text that may be long is measured.
    if (text.length * 3 > hmacSha256ShortTextBytesMax && Buffer.byteLength(text, 'utf8') > hmacSha256ShortTextBytesMax) {
      return createHmac('sha256', longKey).update(text, 'utf8').digest().subarray(0, bytes);
    }
    const used = scratch.write(text, 0, 'utf8');
    // Inner: the key's block is in innerKeyState; the text follows it.
    const innerEnd = pad(scratch, used, blockBytes + used);
    state.set(innerKeyState);
    for (let offset = 0; offset < innerEnd; offset += blockBytes) compress(state, scratch, offset);
    // Outer: the key's block is in outerKeyState; the inner digest follows it.
    for (let i = 0; i < 8; i++) scratch.writeInt32BE(state[i]!, i * 4);
    pad(scratch, digestBytes, blockBytes + digestBytes);
    state.set(outerKeyState);
    compress(state, scratch, 0);
    const out = Buffer.allocUnsafe(bytes);
    for (let i = 0; i < bytes; i++) out[i] = state[i >> 2]! >>> (24 - 8 * (i & 3));
    return out;
  };
}
