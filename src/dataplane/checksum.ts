// Internet checksum (RFC 1071) over packet bytes.
//
// The sum is taken 32 bits at a time where it can be: RFC 1071's byte-order independence lets a
// little-endian 32-bit word stand for two byte-swapped 16-bit words, and 2^16 ≡ 1 (mod 2^16 - 1)
// lets a plain sum of such words stand for their ones'-complement sum. The result is congruent
// (mod 0xffff) to the big-endian word sum, and zero only when the bytes are, so every fold of it
// gives the same 16 bits. Measured on 64 000 bytes: ~4 GB/s against ~2 GB/s for the word loop.

/** A Uint32Array over the whole of the last buffer asked about (the pool's, on the hot path). */
let wordsOf: ArrayBufferLike | undefined;
let words: Uint32Array<ArrayBufferLike> = new Uint32Array(0);

/**
 * Below this many bytes the 16-bit loop is as fast. It is also what keeps the sum of a header of
 * at most 60 bytes (IPv4 with options) a plain sum of its words, from which TcpSegments takes
 * three words out again (offload.ts): keep it above 60.
 */
const WIDE_MIN = 64;

/** Unfolded ones'-complement sum of big-endian 16-bit words in bytes[start, end). */
export function sumWords(b: Uint8Array, start: number, end: number, init: number): number {
  const abs = b.byteOffset + start;
  if (end - start < WIDE_MIN || (abs & 1) !== 0) return sumNarrow(b, start, end, init);
  const buf = b.buffer;
  if (buf !== wordsOf) {
    wordsOf = buf;
    words = new Uint32Array(buf, 0, Math.floor(buf.byteLength / 4)); // (the arena is 2^32 bytes: no >>>)
  }
  // A 16-bit word up to the first 4-byte boundary (start is even), then whole 32-bit words.
  let i = start;
  let sum = init;
  if ((abs & 2) !== 0) {
    sum += (b[i]! << 8) | b[i + 1]!;
    i += 2;
  }
  const w = words;
  let k = (b.byteOffset + i) >>> 2;
  const kEnd = (b.byteOffset + end) >>> 2;
  let s0 = 0;
  let s1 = 0;
  for (; k + 4 <= kEnd; k += 4) {
    s0 += w[k]! + w[k + 1]!;
    s1 += w[k + 2]! + w[k + 3]!;
  }
  for (; k < kEnd; k++) s0 += w[k]!;
  i = k * 4 - b.byteOffset;
  // The 32-bit words summed little-endian: fold to 16 bits and swap the bytes back.
  let x = s0 + s1;
  while (x > 0xffff) x = (x % 0x10000) + Math.floor(x / 0x10000);
  sum += ((x & 0xff) << 8) | (x >>> 8);
  return sumNarrow(b, i, end, sum);
}

function sumNarrow(b: Uint8Array, start: number, end: number, init: number): number {
  let sum = init;
  let i = start;
  const last = end - 1;
  for (; i < last; i += 2) sum += (b[i]! << 8) | b[i + 1]!;
  if (i < end) sum += b[i]! << 8;
  return sum;
}

/** Fold a sum to 16 bits (the sum may exceed 32 bits for large frames, so no >>> here). */
export function fold(sum: number): number {
  while (sum > 0xffff) sum = (sum % 0x10000) + Math.floor(sum / 0x10000);
  return sum;
}

export function checksum(b: Uint8Array, start: number, end: number, init = 0): number {
  return ~fold(sumWords(b, start, end, init)) & 0xffff;
}
