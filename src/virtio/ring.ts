// Split virtqueue layout (virtio 1.2, 2.7): the three parts of a queue, their sizes and
// alignments, the field offsets inside each, and the event-index test both sides use to decide
// whether to notify. Everything here is a number: no objects, usable on the hot path.
//
//   struct virtq_desc  { le64 addr; le32 len; le16 flags; le16 next; }          16 bytes, align 16
//   struct virtq_avail { le16 flags; le16 idx; le16 ring[size]; le16 used_event; }      align 2
//   struct virtq_used  { le16 flags; le16 idx; {le32 id; le32 len} ring[size]; le16 avail_event; }
//                                                                                       align 4

// Feature bits (virtio 1.2, 6 "Reserved Feature Bits").
export const VIRTIO_F_INDIRECT_DESC = 28;
export const VIRTIO_F_EVENT_IDX = 29;
export const VIRTIO_F_VERSION_1 = 32;

// Descriptor (2.7.5).
export const DESC_SIZE = 16;
export const DESC_ADDR = 0; // le64
export const DESC_LEN = 8; // le32
export const DESC_FLAGS = 12; // le16
export const DESC_NEXT = 14; // le16
export const VRING_DESC_F_NEXT = 1;
export const VRING_DESC_F_WRITE = 2;
export const VRING_DESC_F_INDIRECT = 4;

// Available ring (2.7.6).
export const AVAIL_FLAGS = 0;
export const AVAIL_IDX = 2;
export const AVAIL_RING = 4;
export const VRING_AVAIL_F_NO_INTERRUPT = 1;

// Used ring (2.7.8).
export const USED_FLAGS = 0;
export const USED_IDX = 2;
export const USED_RING = 4;
export const USED_ELEM_SIZE = 8;
export const USED_ELEM_ID = 0; // le32
export const USED_ELEM_LEN = 4; // le32
export const VRING_USED_F_NO_NOTIFY = 1;

// Alignment of each part (2.7, table; driver requirement 2.7.1).
export const DESC_ALIGN = 16;
export const AVAIL_ALIGN = 2;
export const USED_ALIGN = 4;

/** Largest queue size (2.7: "The maximum Queue Size value is 32768"). */
export const MAX_QUEUE_SIZE = 32768;

export function isValidQueueSize(size: number): boolean {
  return Number.isInteger(size) && size >= 1 && size <= MAX_QUEUE_SIZE && (size & (size - 1)) === 0;
}

/** Bytes of the descriptor table: 16 * size. */
export function descTableSize(size: number): number {
  return DESC_SIZE * size;
}
/** Bytes of the available ring including used_event: 6 + 2 * size. */
export function availRingSize(size: number): number {
  return 6 + 2 * size;
}
/** Bytes of the used ring including avail_event: 6 + 8 * size. */
export function usedRingSize(size: number): number {
  return 6 + USED_ELEM_SIZE * size;
}
/** Offset of used_event inside the available ring. */
export function usedEventOffset(size: number): number {
  return AVAIL_RING + 2 * size;
}
/** Offset of avail_event inside the used ring. */
export function availEventOffset(size: number): number {
  return USED_RING + USED_ELEM_SIZE * size;
}

/**
 * vring_need_event (virtio 1.2, 2.7.7 / include/uapi/linux/virtio_ring.h): true when the
 * index `eventIdx` the other side asked to be woken at lies in [oldIdx, newIdx), i.e. the
 * producer moved its index from oldIdx to newIdx across the event. All arithmetic is modulo
 * 2^16, so it stays right when the free-running indexes wrap.
 */
export function vringNeedEvent(eventIdx: number, newIdx: number, oldIdx: number): boolean {
  return ((newIdx - eventIdx - 1) & 0xffff) < ((newIdx - oldIdx) & 0xffff);
}
