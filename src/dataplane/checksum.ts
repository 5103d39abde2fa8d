// Internet checksum (RFC 1071) over packet bytes.

/** Unfolded ones'-complement sum of big-endian 16-bit words in bytes[start, end). */
export function sumWords(b: Uint8Array, start: number, end: number, init: number): number {
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
