// What the ring code needs from memory: one byte view and one DataView over the memory the rings
// and buffers live in (pier's 4 GiB arena, or a plain buffer in tests), and a translation from
// the driver's addresses to offsets in it.

export interface ByteSpace {
  readonly bytes: Uint8Array;
  readonly dv: DataView;
  /** For Atomics on 16-bit ring indexes (same buffer as bytes). */
  readonly u16: Uint16Array;
}

export interface AddressSpace {
  /**
   * Offset in ByteSpace.bytes of the driver address range [addr, addr + len), or -1 when any
   * part of it lies outside every mapped region (or len is 0 when that is not allowed by the
   * caller). Addresses are exact integers below 2^53; callers reject larger ones first.
   */
  translate(addr: number, len: number): number;
}
