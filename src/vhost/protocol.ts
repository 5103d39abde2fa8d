// vhost-user's numbers (QEMU docs/interop/vhost-user.rst): a 12-byte header (request u32, flags
// u32, size u32) then `size` bytes of payload, fds as SCM_RIGHTS; request codes, flags, protocol
// feature bits. How each request is framed and checked is codec.ts.

export const HDR_SIZE = 12;
/** Largest payload pier accepts; larger means a broken or hostile frontend. */
export const MAX_PAYLOAD = 4096;

export const VHOST_USER_VERSION = 0x1;
export const FLAG_VERSION_MASK = 0x3;
export const FLAG_REPLY = 1 << 2;
export const FLAG_NEED_REPLY = 1 << 3;

export const enum Req {
  GET_FEATURES = 1,
  SET_FEATURES = 2,
  SET_OWNER = 3,
  RESET_OWNER = 4,
  SET_MEM_TABLE = 5,
  SET_LOG_BASE = 6,
  SET_LOG_FD = 7,
  SET_VRING_NUM = 8,
  SET_VRING_ADDR = 9,
  SET_VRING_BASE = 10,
  GET_VRING_BASE = 11,
  SET_VRING_KICK = 12,
  SET_VRING_CALL = 13,
  SET_VRING_ERR = 14,
  GET_PROTOCOL_FEATURES = 15,
  SET_PROTOCOL_FEATURES = 16,
  GET_QUEUE_NUM = 17,
  SET_VRING_ENABLE = 18,
  SEND_RARP = 19,
  NET_SET_MTU = 20,
  SET_BACKEND_REQ_FD = 21,
  IOTLB_MSG = 22,
  SET_VRING_ENDIAN = 23,
  GET_CONFIG = 24,
  SET_CONFIG = 25,
  GET_INFLIGHT_FD = 31,
  SET_INFLIGHT_FD = 32,
  GET_MAX_MEM_SLOTS = 36,
  ADD_MEM_REG = 37,
  REM_MEM_REG = 38,
  SET_STATUS = 39,
  GET_STATUS = 40,
}

export const REQ_NAMES: Record<number, string> = {
  1: 'GET_FEATURES', 2: 'SET_FEATURES', 3: 'SET_OWNER', 4: 'RESET_OWNER', 5: 'SET_MEM_TABLE',
  6: 'SET_LOG_BASE', 7: 'SET_LOG_FD', 8: 'SET_VRING_NUM', 9: 'SET_VRING_ADDR', 10: 'SET_VRING_BASE',
  11: 'GET_VRING_BASE', 12: 'SET_VRING_KICK', 13: 'SET_VRING_CALL', 14: 'SET_VRING_ERR',
  15: 'GET_PROTOCOL_FEATURES', 16: 'SET_PROTOCOL_FEATURES', 17: 'GET_QUEUE_NUM', 18: 'SET_VRING_ENABLE',
  19: 'SEND_RARP', 20: 'NET_SET_MTU', 21: 'SET_BACKEND_REQ_FD', 22: 'IOTLB_MSG', 23: 'SET_VRING_ENDIAN',
  24: 'GET_CONFIG', 25: 'SET_CONFIG', 31: 'GET_INFLIGHT_FD', 32: 'SET_INFLIGHT_FD', 36: 'GET_MAX_MEM_SLOTS',
  37: 'ADD_MEM_REG', 38: 'REM_MEM_REG', 39: 'SET_STATUS', 40: 'GET_STATUS',
};

// Protocol features (VHOST_USER_PROTOCOL_F_*)
export const PF_MQ = 0;
export const PF_LOG_SHMFD = 1;
export const PF_RARP = 2;
export const PF_REPLY_ACK = 3;
export const PF_MTU = 4;
export const PF_BACKEND_REQ = 5;
export const PF_CONFIG = 9;
export const PF_STATUS = 16;

/** VHOST_USER_F_PROTOCOL_FEATURES: a virtio feature bit that only means "speaks the extensions". */
export const F_PROTOCOL_FEATURES = 30;

export const VRING_IDX_MASK = 0xff;
export const VRING_NOFD_MASK = 1 << 8;
