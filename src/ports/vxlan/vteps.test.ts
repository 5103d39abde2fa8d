// The VTEP table of a vxlan port: remotes stay, learned senders are freed once no MAC is behind
// them, so senders seen over a port's life do not fill its 256 slots for good. Driven through the
// port's own look-up (a sender's sockaddr where recvmmsg puts it) and its timer.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { newCounters } from '../../dataplane/counters.ts';
import { PacketPool } from '../../dataplane/pool.ts';
import { VxlanPort } from './dataplane.ts';
import type { VxlanSpec } from './options.ts';

interface Inside {
  rx: { bytes: Uint8Array; nameOffset(m: number): number };
  vtepOf(b: Uint8Array, at: number): number;
  table: { learn(mac: number, port: number, now: number): void; agingSeconds: number };
  extra: Float64Array;
}

function port(): { p: VxlanPort; x: Inside } {
  const spec: VxlanSpec = {
    rxFd: -1, txFds: [], txPorts: [], family: 4, vni: 42, dstport: 4789, local: undefined, remotes: ['192.0.2.2', '192.0.2.3'],
    underlayMtu: 1500, mtuFrom: 'mtu=', gso: false, gro: false, udpGro: false, rco: false,
  };
  const p = new VxlanPort(1, 'vx0', 0, newCounters(), new PacketPool(8), spec);
  return { p, x: p as unknown as Inside };
}

/** The sender 198.51.100.<n> as recvmmsg leaves it in message 0's name slot; its VTEP index. */
function from(x: Inside, n: number): number {
  const o = x.rx.nameOffset(0);
  x.rx.bytes.set([2, 0, 0x12, 0xb5, 198, 51, 100, n & 0xff], o);
  return x.vtepOf(x.rx.bytes, o + 4);
}

describe('vxlan VTEP table', () => {
  it('keeps the remotes first, learns a new sender once, and frees it when no MAC is left behind it', () => {
    const { p, x } = port();
    const v = from(x, 7);
    assert.equal(v, 2, 'after the two remotes');
    assert.equal(from(x, 7), 2, 'the same sender is the same VTEP');
    x.table.learn(0x020000000001, v, 1000);
    // Still referenced: kept.
    (p as unknown as { reclaimVteps(now: number): void }).reclaimVteps(1000);
    assert.equal(p.describe().vteps.length, 3);
    // The MAC ages out: the slot is freed; the remotes stay.
    x.table.agingSeconds = 1;
    p.timerAt = 1;
    p.onTimer();
    assert.deepEqual(p.describe().vteps.map((t) => t.address), ['192.0.2.2', '192.0.2.3']);
    assert.equal(x.extra[13], 1, 'vteps_reclaimed');
    assert.equal(from(x, 8), 2, 'the freed slot is taken by the next new sender');
    p.close();
  });

  it('takes more than 256 senders over its life, as long as no more than 254 are live at once', () => {
    const { p, x } = port();
    x.table.agingSeconds = 1;
    for (let round = 0; round < 3; round++) {
      for (let n = 0; n < 200; n++) assert.ok(from(x, n + round) >= 2, `sender ${n} of round ${round} has a slot`);
      p.onTimer(); // nothing learned behind them: all freed
    }
    assert.equal(x.extra[4], 0, 'vtep_table_full never counted');
    // 254 live at once fill the slots after the remotes; the next one is refused and counted.
    for (let n = 0; n < 254; n++) assert.equal(from(x, n), 2 + n);
    assert.equal(from(x, 254), -1);
    assert.equal(x.extra[4], 1, 'vtep_table_full');
    p.close();
  });
});
