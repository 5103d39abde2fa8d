// One popped descriptor chain, as a preallocated scratch the device queue fills in place: the
// head index to return in the used ring, and one (offset, length, writable) triple per buffer,
// where offset is already translated into ByteSpace.bytes. Reused for every pop: no allocation
// per descriptor or per packet.
//
// Capacity. A chain may legally be as long as the queue (up to 32768), and an indirect table
// longer still; preallocating that per queue is wasteful, and the spec lets a device refuse
// absurd chains (virtio 1.2, 2.7.4.1: "The device MAY have a reasonable limit of descriptors it
// will allow in a chain"). pier's limit is DEFAULT_CHAIN_CAPACITY = 1024 descriptors, the same
// as Linux's UIO_MAXIOV that vhost-net inherits; a longer chain breaks the queue with
// `chain_too_long`. The limit counts every buffer descriptor walked (zero-length ones too, so
// the walk is bounded), not the descriptor that only points at an indirect table.
//
// Zero-length buffers are accepted and skipped: they are walked and checked for order
// (readable before writable) but produce no segment and are not translated, as Linux vhost
// (translate_desc adds no iovec) and DPDK (map_one_desc adds no buf_vec entry) do.

export const DEFAULT_CHAIN_CAPACITY = 1024;

export class DescriptorChain {
  /** Most descriptors a chain may have; also the length of the segment arrays. */
  readonly capacity: number;
  /** Index of the head descriptor: the id the device returns in the used ring. */
  head: number;
  /** Segments recorded (non-empty buffers), readable ones first. */
  count: number;
  /** Number of readable segments: segments [0, readable) are readable, [readable, count) writable. */
  readable: number;
  /** Sum of the lengths of the readable segments. */
  readableBytes: number;
  /** Sum of the lengths of the writable segments: the most the device may report as used. */
  writableBytes: number;
  /** Buffer descriptors walked, including zero-length ones. */
  descriptors: number;
  /** True when the chain went through an indirect table. */
  indirect: boolean;
  /** Offset of each segment in ByteSpace.bytes (exact up to 2^53). */
  readonly offset: Float64Array;
  /** Length of each segment in bytes. */
  readonly len: Uint32Array;
  /** 1 when the segment is device-writable, else 0. */
  readonly writable: Uint8Array;

  constructor(capacity: number = DEFAULT_CHAIN_CAPACITY) {
    if (!Number.isInteger(capacity) || capacity < 1 || capacity > 65536) {
      throw new RangeError(`DescriptorChain capacity must be 1..65536, got ${capacity}`);
    }
    this.capacity = capacity;
    this.head = 0;
    this.count = 0;
    this.readable = 0;
    this.readableBytes = 0;
    this.writableBytes = 0;
    this.descriptors = 0;
    this.indirect = false;
    this.offset = new Float64Array(capacity);
    this.len = new Uint32Array(capacity);
    this.writable = new Uint8Array(capacity);
  }

  /** Forget the previous chain (called by the queue before each walk). */
  clear(head: number): void {
    this.head = head;
    this.count = 0;
    this.readable = 0;
    this.readableBytes = 0;
    this.writableBytes = 0;
    this.descriptors = 0;
    this.indirect = false;
  }

  /** Bytes of all segments, readable and writable. */
  get totalBytes(): number {
    return this.readableBytes + this.writableBytes;
  }
}
