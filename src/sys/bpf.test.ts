import assert from 'node:assert/strict';
import { test } from 'node:test';
import { xskRedirectProgram } from './bpf.ts';

test('bpf: the XSK redirect program, byte for byte (what clang emits for libxdp\'s default program)', () => {
  const hex = Buffer.from(xskRedirectProgram(0x1234)).toString('hex').match(/.{16}/g);
  assert.deepEqual(hex, [
    '6112100000000000', // r2 = *(u32 *)(r1 + 16)         ctx->rx_queue_index
    '1811000034120000', // r1 = map fd 0x1234              ld_imm64, src BPF_PSEUDO_MAP_FD
    '0000000000000000', //                                 (its upper half)
    'b703000002000000', // r3 = 2                          XDP_PASS when no socket is at the key
    '8500000033000000', // call 51                         bpf_redirect_map
    '9500000000000000', // exit
  ]);
});
