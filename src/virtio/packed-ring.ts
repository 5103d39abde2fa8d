// Packed virtqueue layout (virtio 1.2, 2.8): one descriptor ring both sides write, and two event
// suppression structures. Numbers only, usable on the hot path.
//
//   struct pvirtq_desc           { le64 addr; le32 len; le16 id; le16 flags; }   16 bytes, align 16
//   struct pvirtq_event_suppress { le16 off_wrap; le16 flags; }                  4 bytes, align 4
//
// A position in the ring is an index below the queue size and a one-bit wrap counter; vhost-user
// and the event suppression structures write it as `index | wrap << 15`.

/** Feature bits (virtio 1.2, 6 "Reserved Feature Bits"). */
export const VIRTIO_F_RING_PACKED = 34;
export const VIRTIO_F_IN_ORDER = 35;

// Descriptor (The Virtqueue Descriptor Format). Flags NEXT, WRITE, INDIRECT are the split ring's.
export const PDESC_ADDR = 0; // le64
export const PDESC_LEN = 8; // le32
export const PDESC_ID = 12; // le16
export const PDESC_FLAGS = 14; // le16
export const VRING_PACKED_DESC_F_AVAIL = 1 << 7;
export const VRING_PACKED_DESC_F_USED = 1 << 15;
export const PACKED_DESC_ALIGN = 16;

// Event suppression structure (Event Suppression Structure Format).
export const EVENT_OFF_WRAP = 0; // le16: desc_event_off (15 bits) | desc_event_wrap << 15
export const EVENT_FLAGS = 2; // le16: desc_event_flags in bits 0-1
export const EVENT_SUPPRESS_SIZE = 4;
export const EVENT_SUPPRESS_ALIGN = 4;
export const RING_EVENT_FLAGS_ENABLE = 0;
export const RING_EVENT_FLAGS_DISABLE = 1;
/** Only with VIRTIO_F_EVENT_IDX: notify when the position in off_wrap is passed. */
export const RING_EVENT_FLAGS_DESC = 2;

/** Largest packed queue (2.8: "Packed virtqueues support up to 2^15 entries each"). */
export const MAX_PACKED_QUEUE_SIZE = 32768;

/** 1..32768; unlike the split ring, not necessarily a power of two. */
export function isValidPackedQueueSize(size: number): boolean {
  return Number.isInteger(size) && size >= 1 && size <= MAX_PACKED_QUEUE_SIZE;
}

/** Bytes of the descriptor ring: 16 * size. */
export function packedRingSize(size: number): number {
  return 16 * size;
}

/**
 * Whether flags mark a descriptor available to a device whose avail wrap counter is `wrap`
 * (0 or 1): AVAIL equals the counter and USED differs from it.
 */
export function isAvail(flags: number, wrap: number): boolean {
  return ((flags >>> 7) & 1) === wrap && ((flags >>> 15) & 1) !== wrap;
}

/** Whether flags mark a descriptor used for a driver whose used wrap counter is `wrap`: both bits equal it. */
export function isUsed(flags: number, wrap: number): boolean {
  return ((flags >>> 7) & 1) === wrap && ((flags >>> 15) & 1) === wrap;
}

/** AVAIL and USED bits of a descriptor made available with wrap counter `wrap`. */
export function availFlags(wrap: number): number {
  return wrap !== 0 ? VRING_PACKED_DESC_F_AVAIL : VRING_PACKED_DESC_F_USED;
}

/** AVAIL and USED bits of a descriptor marked used with wrap counter `wrap`. */
export function usedFlags(wrap: number): number {
  return wrap !== 0 ? VRING_PACKED_DESC_F_AVAIL | VRING_PACKED_DESC_F_USED : 0;
}

/**
 * A ring position as a counter modulo 2 * size that advances by one per descriptor, across the
 * wrap: the counter starts at 1, so (index, 1) is the first lap and (index, 0) the second.
 */
export function packedCounter(index: number, wrap: number, size: number): number {
  return wrap !== 0 ? index : index + size;
}

/**
 * The event test of both sides (2.8 Driver and Device Event Suppression, with EVENT_IDX): true
 * when the position in `offWrap` (index | wrap << 15) lies in [old, new), where old and new are
 * the producer's counters (packedCounter) before and after what it just made available / used.
 * The split ring's vring_need_event, modulo 2 * size instead of 2^16.
 */
export function packedNeedEvent(offWrap: number, newCounter: number, oldCounter: number, size: number): boolean {
  const span = 2 * size;
  const off = offWrap & 0x7fff;
  if (off >= size) return false; // no descriptor there: an event that never comes
  const event = packedCounter(off, offWrap >>> 15, size);
  return (newCounter - event - 1 + 2 * span) % span < (newCounter - oldCounter + span) % span;
}
