import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { describePacket } from '../cli/capture.ts';
import { BT_EPB, BT_IDB, BT_SHB, describeVnetHeader, EPB_INBOUND, EPB_OUTBOUND, enhancedPacket, interfaceDescription, interfaceStatistics, PcapngBlocks, sectionHeader, timestamp } from './pcapng.ts';

/** A minimal Ethernet + IPv4 + UDP frame from 10.0.0.1 to 10.0.0.2. */
function frame(): Uint8Array {
  const f = new Uint8Array(60);
  f.set([2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00], 0);
  f.set([0x45, 0, 0, 46, 0, 0, 0, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2], 14);
  f.set([0x12, 0x34, 0x00, 0x35], 34); // UDP 4660 > 53
  return f;
}

describe('pcapng blocks', () => {
  test('every block is a multiple of 4 bytes and carries its length at both ends', () => {
    const blocks = [sectionHeader('pier test'), interfaceDescription('c1', 'pier tap port on bridge br0', 65535),
      enhancedPacket({ iface: 0, ts: 1n, origLen: 61, flags: EPB_INBOUND, comment: 'odd' }, new Uint8Array(61), 0, 61),
      interfaceStatistics({ iface: 0, start: 1n, end: 2n, received: 3, dropped: 1, delivered: 2 })];
    for (const b of blocks) {
      assert.equal(b.length % 4, 0);
      assert.equal(b.readUInt32LE(4), b.length);
      assert.equal(b.readUInt32LE(b.length - 4), b.length);
    }
    const shb = blocks[0]!;
    assert.equal(shb.readUInt32LE(0), BT_SHB);
    assert.equal(shb.readUInt32LE(8), 0x1a2b3c4d, 'the byte-order magic');
    assert.equal(blocks[1]!.readUInt32LE(0), BT_IDB);
    assert.equal(blocks[1]!.readUInt16LE(8), 1, 'LINKTYPE_ETHERNET');
  });

  test('nanosecond timestamps split into two 32-bit halves', () => {
    const ts = timestamp(1_764_000_000, 123_456_789);
    const b = enhancedPacket({ iface: 3, ts, origLen: 60, flags: EPB_OUTBOUND }, frame(), 0, 60);
    assert.equal(b.readUInt32LE(0), BT_EPB);
    assert.equal(b.readUInt32LE(8), 3);
    assert.equal((BigInt(b.readUInt32LE(12)) << 32n) | BigInt(b.readUInt32LE(16)), 1_764_000_000_123_456_789n);
  });

  test('the CLI reads the stream back whatever its chunking: names, packets, statistics, one line per packet', () => {
    const ts = timestamp(1_764_000_000, 5);
    const stream = Buffer.concat([sectionHeader('pier'), interfaceDescription('c1', 'd', 262144), interfaceDescription('up0', 'd', 262144),
      enhancedPacket({ iface: 1, ts, origLen: 60, flags: EPB_INBOUND, comment: 'virtio-net: data_valid' }, frame(), 0, 60),
      enhancedPacket({ iface: 0, ts, origLen: 60, flags: EPB_OUTBOUND }, frame(), 0, 34),
      interfaceStatistics({ iface: 0, start: ts, end: ts, received: 10, dropped: 9, delivered: 1 })]);
    const lines: string[] = [];
    const r = new PcapngBlocks((i, b) => lines.push(describePacket(i.name, b)));
    for (let at = 0; at < stream.length; at += 7) r.push(stream.subarray(at, Math.min(stream.length, at + 7)));
    assert.ok(r.complete);
    assert.deepEqual(r.ifaces, [{ name: 'c1', packets: 1, received: 10, dropped: 9 }, { name: 'up0', packets: 1 }]);
    assert.equal(lines[0], '16:00:00.000000005 up0 in  02:00:00:00:00:01 > 02:00:00:00:00:02 IPv4 10.0.0.1.4660 > 10.0.0.2.53 UDP, length 60 (virtio-net: data_valid)');
    assert.match(lines[1]!, /^16:00:00\.000000005 c1 out .* 10\.0\.0\.1 > 10\.0\.0\.2 UDP, length 60$/, 'cut at 34 bytes: no ports');
  });

  test('a block length that cannot be pier\'s is an error, not a hang', () => {
    const bad = Buffer.alloc(12);
    bad.writeUInt32LE(6, 0);
    bad.writeUInt32LE(7, 4);
    assert.throws(() => new PcapngBlocks().push(bad), /capture stream is broken/);
  });

  test('the virtio-net header in words', () => {
    const h = new Uint8Array(12);
    assert.equal(describeVnetHeader(h, 0), undefined, 'a plain frame has no comment');
    h.set([1, 1, 66, 0, 0xa8, 0x05, 34, 0, 16, 0]);
    assert.equal(describeVnetHeader(h, 0), 'virtio-net: gso tcpv4 size 1448 hdr_len 66; needs_csum start 34 offset 16');
    h.set([2, 0x84]);
    assert.equal(describeVnetHeader(h, 0), 'virtio-net: gso tcpv6+ecn size 1448 hdr_len 66; data_valid');
  });
});
