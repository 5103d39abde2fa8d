import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { C } from './counters.ts';
import { Engine } from './engine.ts';
import { completeChecksum } from './offload.ts';
import { BUF_SIZE, PacketPool, VNET_HDR } from './pool.ts';
import { WirePort } from './wire-port.test-util.ts';
import { applyVlan, popTag, PUSH_TOO_BIG, pushTag, VLAN_ACCESS, VLAN_HLEN, VLAN_IDS, VLAN_NONE, VLAN_TRUNK, vlanRanges, type PortVlan, type VlanConfig } from './vlan.ts';
import { readVnetHdr, VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_TCPV4, writeVnetHdr } from './vnet.ts';

fc.configureGlobal({ seed: Number(process.env.FC_SEED ?? 20241124) });

const pool = new PacketPool(16);

/** Put header + frame bytes into a new pool buffer. */
function put(hdr: Uint8Array, frame: Uint8Array): number {
  const h = pool.alloc();
  assert.ok(h >= 0);
  pool.bytes.set(hdr, pool.hdrOffset(h));
  pool.bytes.set(frame, pool.frameOffset(h));
  pool.len[h] = frame.length;
  return h;
}

function frameOf(h: number): Uint8Array {
  const fo = pool.frameOffset(h);
  return pool.bytes.slice(fo, fo + pool.len[h]!);
}

/** A lender that records returned tags. */
class Lender {
  returned: number[] = [];
  returnBuffer(tag: number): void {
    this.returned.push(tag);
  }
}

const untaggedFrame = (n: number): Uint8Array => Uint8Array.from({ length: n }, (_, i) => (i * 7 + 3) & 0xff);
const insertTag = (f: Uint8Array, vid: number): Uint8Array => Uint8Array.from([...f.subarray(0, 12), 0x81, 0x00, vid >> 8, vid & 0xff, ...f.subarray(12)]);

describe('push and pop of an 802.1Q tag', () => {
  test('push in place inserts 81 00 + VID after the MAC addresses, byte for byte; pop restores it', () => {
    const free0 = pool.available();
    const f = untaggedFrame(60);
    const h = put(new Uint8Array(12), f);
    const t = pushTag(pool, h, 0xabc);
    assert.equal(t, h, 'in place: nobody else holds it');
    assert.deepEqual(frameOf(t), insertTag(f, 0xabc));
    const u = popTag(pool, t);
    assert.equal(u, h);
    assert.deepEqual(frameOf(u), f);
    pool.release(u);
    assert.equal(pool.available(), free0);
  });

  test('property: pop(push(frame, vid)) is the frame, for any length 14..1514 and VID 1..4094', () => {
    fc.assert(fc.property(fc.uint8Array({ minLength: 14, maxLength: 1514 }), fc.integer({ min: 1, max: 4094 }), (f, vid) => {
      const h = put(new Uint8Array(12), f);
      const t = pushTag(pool, h, vid);
      assert.deepEqual(frameOf(t), insertTag(f, vid));
      const u = popTag(pool, t);
      assert.deepEqual(frameOf(u), f);
      pool.release(u);
    }));
  });

  test('NEEDS_CSUM: csum_start moves +4 on push and -4 on pop; the completed checksum is the same', () => {
    // IPv4/UDP frame with a partial checksum: the field holds the pseudo-header sum (any value works for the check)
    const f = untaggedFrame(80);
    f[12] = 0x08; f[13] = 0x00;
    const hdr = new Uint8Array(12);
    const dv = new DataView(hdr.buffer);
    writeVnetHdr(dv, 0, { flags: VIRTIO_NET_HDR_F_NEEDS_CSUM, gsoType: 0, hdrLen: 0, gsoSize: 0, csumStart: 34, csumOffset: 6, numBuffers: 0 });
    const a = put(hdr, f);
    const b = put(hdr, f);
    const t = pushTag(pool, b, 10);
    const th = readVnetHdr(pool.dv, pool.hdrOffset(t));
    assert.equal(th.csumStart, 38);
    assert.equal(th.hdrLen, 0, 'an unset hdr_len stays unset');
    assert.ok(completeChecksum(pool, a));
    assert.ok(completeChecksum(pool, t));
    assert.deepEqual(frameOf(t), insertTag(frameOf(a), 10), 'the checksum lands on the same bytes');
    pool.release(t);
    pool.release(a);
    writeVnetHdr(dv, 0, { flags: VIRTIO_NET_HDR_F_NEEDS_CSUM, gsoType: 0, hdrLen: 0, gsoSize: 0, csumStart: 38, csumOffset: 6, numBuffers: 0 });
    const u = popTag(pool, put(hdr, insertTag(f, 10)));
    assert.equal(readVnetHdr(pool.dv, pool.hdrOffset(u)).csumStart, 34);
    assert.deepEqual(frameOf(u), f);
    pool.release(u);
  });

  test('GSO super-frame: hdr_len and csum_start move with the tag, gso_type and gso_size stay', () => {
    const f = untaggedFrame(9000);
    const hdr = new Uint8Array(12);
    writeVnetHdr(new DataView(hdr.buffer), 0, { flags: VIRTIO_NET_HDR_F_NEEDS_CSUM, gsoType: VIRTIO_NET_HDR_GSO_TCPV4, hdrLen: 66, gsoSize: 1448, csumStart: 34, csumOffset: 16, numBuffers: 0 });
    const h = put(hdr, f);
    const t = pushTag(pool, h, 20);
    assert.deepEqual(readVnetHdr(pool.dv, pool.hdrOffset(t)), { flags: VIRTIO_NET_HDR_F_NEEDS_CSUM, gsoType: VIRTIO_NET_HDR_GSO_TCPV4, hdrLen: 70, gsoSize: 1448, csumStart: 38, csumOffset: 16, numBuffers: 0 });
    assert.equal(pool.len[t], 9004);
    const u = popTag(pool, t);
    assert.deepEqual(readVnetHdr(pool.dv, pool.hdrOffset(u)), { flags: VIRTIO_NET_HDR_F_NEEDS_CSUM, gsoType: VIRTIO_NET_HDR_GSO_TCPV4, hdrLen: 66, gsoSize: 1448, csumStart: 34, csumOffset: 16, numBuffers: 0 });
    assert.deepEqual(frameOf(u), f);
    pool.release(u);
  });

  test('a packet someone else still holds is copied: the other holder keeps the untagged frame', () => {
    const free0 = pool.available();
    const f = untaggedFrame(64);
    const h = put(new Uint8Array(12), f);
    pool.refs[h] = 2; // flooded to two ports
    const t = pushTag(pool, h, 7);
    assert.notEqual(t, h);
    assert.equal(pool.refs[h], 1);
    assert.deepEqual(frameOf(h), f);
    assert.deepEqual(frameOf(t), insertTag(f, 7));
    pool.release(t);
    pool.release(h);
    assert.equal(pool.available(), free0);
  });

  test('a lent packet (peer memory) is copied, never written, and returned to its lender', () => {
    const free0 = pool.available();
    const lender = new Lender();
    const tagged = insertTag(untaggedFrame(60), 300);
    const scratch = put(new Uint8Array(12), tagged); // stands in for peer memory inside the arena
    const snapshot = frameOf(scratch);
    const e = pool.lend(pool.hdrOffset(scratch), tagged.length, lender, 42);
    const u = popTag(pool, e);
    assert.ok(u >= 0 && !pool.isExternal(u));
    assert.deepEqual(frameOf(u), untaggedFrame(60));
    assert.deepEqual(frameOf(scratch), snapshot, 'peer memory untouched');
    assert.deepEqual(lender.returned, [42]);
    pool.release(u);
    pool.release(scratch);
    assert.equal(pool.available(), free0);
  });

  test('an empty pool: the copy fails with -1 and the reference is released', () => {
    const small = new PacketPool(1);
    const h = small.alloc();
    small.len[h] = 60;
    small.refs[h] = 2;
    assert.equal(pushTag(small, h, 5), -1);
    assert.equal(small.refs[h], 1);
  });
});

describe('a tag that does not fit', () => {
  test('a frame filling its buffer to the last byte is refused (PUSH_TOO_BIG), released, and the next buffer is untouched', () => {
    const p = new PacketPool(2);
    const h = p.alloc();
    const next = p.alloc();
    const max = BUF_SIZE - VNET_HDR;
    p.len[h] = max;
    p.bytes.fill(0xab, p.hdrOffset(next), p.hdrOffset(next) + VNET_HDR);
    assert.equal(pushTag(p, h, 10), PUSH_TOO_BIG);
    assert.equal(p.refs[h], 0, 'released');
    assert.deepEqual([...p.bytes.subarray(p.hdrOffset(next), p.hdrOffset(next) + VNET_HDR)], new Array(VNET_HDR).fill(0xab));
    const k = p.alloc();
    p.len[k] = max - VLAN_HLEN;
    assert.ok(pushTag(p, k, 10) >= 0, 'four bytes shorter fits');
  });
});

describe('a port\'s VLAN membership', () => {
  const port = (): PortVlan => {
    const p = { vlanMode: VLAN_NONE, vlanUntagged: 0, vlanMember: new Uint8Array(VLAN_IDS) };
    applyVlan(p, undefined);
    return p;
  };
  const members = (p: PortVlan): number[] => [...p.vlanMember.keys()].filter((v) => p.vlanMember[v] === 1);

  test('no tag or trunks: VLAN 0 only', () => {
    const p = port();
    assert.equal(p.vlanMode, VLAN_NONE);
    assert.deepEqual(members(p), [0]);
  });

  test('access: its tag only, untagged frames belong to it', () => {
    const p = port();
    applyVlan(p, { tag: 10 });
    assert.equal(p.vlanMode, VLAN_ACCESS);
    assert.equal(p.vlanUntagged, 10);
    assert.deepEqual(members(p), [10]);
  });

  test('trunk: its VLANs and the native VLAN 0; back to none clears them', () => {
    const p = port();
    applyVlan(p, { trunks: [10, 20, 4094] });
    assert.equal(p.vlanMode, VLAN_TRUNK);
    assert.equal(p.vlanUntagged, 0);
    assert.deepEqual(members(p), [0, 10, 20, 4094]);
    applyVlan(p, {});
    assert.deepEqual(members(p), [0]);
  });

  test('refuses both, and VIDs outside 1..4094', () => {
    assert.throws(() => applyVlan(port(), { tag: 1, trunks: [2] }), /not both/);
    for (const v of [0, 4095, 1.5]) assert.throws(() => applyVlan(port(), { tag: v }), /not in 1\.\.4094/);
  });

  test('vlanRanges prints runs as ranges', () => {
    assert.equal(vlanRanges([1, 2, 3, 10, 12, 13]), '1-3,10,12-13');
    assert.equal(vlanRanges([4094]), '4094');
    assert.equal(vlanRanges([]), '');
  });
});


const mac = (last: number): number[] => [0x02, 0, 0, 0, 0, last];
const BCAST = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff];
/** An untagged frame dst <- src, 60 bytes, IPv4 ethertype, `marker` in its first payload byte. */
function eth(dst: number[], src: number[], marker: number): Uint8Array {
  const f = new Uint8Array(60);
  f.set(dst, 0);
  f.set(src, 6);
  f[12] = 0x08;
  f[14] = marker;
  return f;
}

describe('a bridge with VLANs (engine, bridge and ports together)', () => {
  /** Ports 1..n on bridge 1 with the given VLAN configs. */
  function rig(configs: Array<VlanConfig | undefined>): { engine: Engine; ports: WirePort[]; send: (i: number, ...f: Uint8Array[]) => void } {
    const engine = new Engine(64, undefined, () => {});
    engine.addBridge(1, 'br');
    const ports = configs.map((c, i) => {
      const p = new WirePort(i + 1, engine.pool);
      engine.addPort(p, c);
      return p;
    });
    return {
      engine, ports,
      send(i, ...f) {
        ports[i]!.inbox.push(...f);
        engine.poll(ports[i]!, 0);
      },
    };
  }
  const markers = (p: WirePort): number[] => p.sent.map((f) => f[f[12] === 0x81 ? 18 : 14]!);

  test('a bridge without VLANs is VLAN-unaware: tagged frames pass through untouched, as before', () => {
    const r = rig([undefined, undefined]);
    assert.equal(r.engine.bridges.get(1)!.vlanAware, false);
    const f = insertTag(eth(BCAST, mac(1), 1), 10);
    r.send(0, f);
    assert.deepEqual(r.ports[1]!.sent, [f]);
  });

  test('access ports: flooding stays in the VLAN, unicast is learned per VLAN, tagged frames are dropped and counted', () => {
    const free0 = (r0: ReturnType<typeof rig>): number => r0.engine.pool.available();
    const r = rig([{ tag: 10 }, { tag: 10 }, { tag: 20 }, { tag: 20 }, undefined]);
    const avail = free0(r);
    r.send(0, eth(BCAST, mac(1), 1));
    assert.deepEqual(r.ports.map(markers), [[], [1], [], [], []], 'the broadcast of VLAN 10 reaches VLAN 10 only');
    r.send(2, eth(BCAST, mac(1), 2)); // the same MAC in VLAN 20: a second entry
    assert.deepEqual(r.ports.map(markers), [[], [1], [], [2], []]);
    r.send(1, eth(mac(1), mac(2), 3)); // to mac 1 in VLAN 10: port 0 only
    r.send(3, eth(mac(1), mac(4), 4)); // to mac 1 in VLAN 20: port 2 only
    assert.deepEqual(r.ports.map(markers), [[3], [1], [4], [2], []]);
    const fdb = r.engine.bridges.get(1)!.fdb.entries(0).map((e) => `${e.vlan}/${e.mac}/${e.port}`).sort();
    assert.deepEqual(fdb, ['10/02:00:00:00:00:01/1', '10/02:00:00:00:00:02/2', '20/02:00:00:00:00:01/3', '20/02:00:00:00:00:04/4']);
    r.send(0, insertTag(eth(BCAST, mac(1), 5), 20));
    assert.equal(r.ports[0]!.counters[C.rx_dropped_vlan], 1);
    r.send(4, eth(BCAST, mac(9), 6)); // VLAN 0: nobody else is in it
    r.send(4, insertTag(eth(BCAST, mac(9), 7), 10)); // a tag on a VLAN 0 port of a VLAN bridge: dropped, never leaks into VLAN 10
    assert.equal(r.ports[4]!.counters[C.rx_dropped_vlan], 1);
    assert.deepEqual(r.ports.map(markers), [[3], [1], [4], [2], []]);
    assert.equal(free0(r), avail);
  });

  test('double tagging: a VID 0 tag over another VLAN\'s tag is dropped on the trunk, never carried into that VLAN', () => {
    const r = rig([{ trunks: [20] }, { tag: 10 }, { trunks: [10, 20] }]);
    const avail = r.engine.pool.available();
    r.send(0, insertTag(insertTag(eth(BCAST, mac(1), 1), 10), 0));
    assert.deepEqual(r.ports.map((p) => p.sent.length), [0, 0, 0]);
    assert.equal(r.ports[0]!.counters[C.rx_dropped_vlan], 1);
    assert.equal(r.engine.pool.available(), avail);
  });

  test('trunk: tagged frames of its VLANs enter popped, others are dropped; frames leave tagged with their VLAN', () => {
    const r = rig([{ trunks: [10, 20] }, { tag: 10 }, { tag: 20 }, { tag: 30 }, { trunks: [20, 30] }]);
    const avail = r.engine.pool.available();
    r.send(0, insertTag(eth(BCAST, mac(1), 1), 10), insertTag(eth(BCAST, mac(1), 2), 20), insertTag(eth(BCAST, mac(1), 3), 30), eth(BCAST, mac(1), 4));
    assert.deepEqual(r.ports[1]!.sent, [eth(BCAST, mac(1), 1)], 'VLAN 10 popped for the access port');
    assert.deepEqual(r.ports[2]!.sent, [eth(BCAST, mac(1), 2)]);
    assert.deepEqual(r.ports[3]!.sent, []);
    assert.deepEqual(r.ports[4]!.sent, [insertTag(eth(BCAST, mac(1), 2), 20), eth(BCAST, mac(1), 4)], 'VLAN 20 pushed again for the other trunk; native VLAN 0 untagged');
    assert.equal(r.ports[0]!.counters[C.rx_dropped_vlan], 1, 'VLAN 30 is not on this trunk');
    r.send(3, eth(mac(1), mac(3), 5)); // VLAN 30 from the access port: mac 1 is unknown in VLAN 30, floods to port 4 only
    assert.deepEqual(r.ports[4]!.sent.at(-1), insertTag(eth(mac(1), mac(3), 5), 30));
    assert.equal(r.ports[0]!.sent.length, 0);
    r.send(2, eth(mac(1), mac(2), 6)); // VLAN 20 to mac 1: learned on the trunk (port 0) in VLAN 20
    assert.deepEqual(r.ports[0]!.sent, [insertTag(eth(mac(1), mac(2), 6), 20)]);
    assert.equal(r.engine.pool.available(), avail);
  });

  test('set-vlan between bursts: the port moves VLAN and what it learned is forgotten', () => {
    const r = rig([{ tag: 10 }, { tag: 10 }, { tag: 20 }]);
    r.send(0, eth(BCAST, mac(1), 1));
    assert.deepEqual(r.ports.map(markers), [[], [1], []]);
    r.engine.setVlan(1, { tag: 20 });
    assert.equal(r.engine.bridges.get(1)!.fdb.entries(0).length, 0);
    r.send(0, eth(BCAST, mac(1), 2));
    assert.deepEqual(r.ports.map(markers), [[], [1], [2]]);
    r.engine.setVlan(1, undefined);
    r.engine.setVlan(2, undefined);
    r.engine.setVlan(3, undefined);
    assert.equal(r.engine.bridges.get(1)!.vlanAware, false, 'no VLAN left: the plain path again');
  });

  test('a TSO super-frame to a trunk that cannot take it is tagged, then segmented with the tag in every segment', () => {
    const engine = new Engine(64, undefined, () => {});
    engine.addBridge(1, 'br');
    const a = new WirePort(1, engine.pool);
    const t = new WirePort(2, engine.pool, false);
    engine.addPort(a, { tag: 10 });
    engine.addPort(t, { trunks: [10] });
    // IPv4/TCP, 3000 bytes of payload, MSS 1000
    const payload = 3000;
    const f = new Uint8Array(14 + 20 + 20 + payload);
    f.set(mac(2), 0);
    f.set(mac(1), 6);
    f[12] = 0x08;
    const ip = new DataView(f.buffer, 14);
    ip.setUint8(0, 0x45);
    ip.setUint16(2, 40 + payload);
    ip.setUint8(8, 64);
    ip.setUint8(9, 6);
    ip.setUint32(12, 0x0a000001);
    ip.setUint32(16, 0x0a000002);
    f[14 + 20 + 12] = 0x50;
    const h = engine.pool.alloc();
    engine.pool.bytes.set(f, engine.pool.frameOffset(h));
    engine.pool.len[h] = f.length;
    writeVnetHdr(engine.pool.dv, engine.pool.hdrOffset(h), { flags: VIRTIO_NET_HDR_F_NEEDS_CSUM, gsoType: VIRTIO_NET_HDR_GSO_TCPV4, hdrLen: 54, gsoSize: 1000, csumStart: 34, csumOffset: 16, numBuffers: 0 });
    a.receive = (_q, out) => {
      out[0] = h;
      a.rxOffloads = true;
      return 1;
    };
    engine.poll(a, 0);
    assert.equal(t.sent.length, 3);
    for (const s of t.sent) {
      assert.deepEqual([...s.subarray(12, 16)], [0x81, 0x00, 0, 10]);
      assert.equal(s.length, 18 + 40 + 1000);
      assert.equal((s[18]! << 8 | s[19]!), 0x4500, 'IPv4 right after the tag');
    }
    assert.equal(t.counters[C.tx_segmented], 1);
  });
});
