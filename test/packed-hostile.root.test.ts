// pier's vhost-user backend on packed rings against an in-process frontend (test/frontend.ts with
// packed = true), as root: a correct frontend's ARP exchange with the kernel on a tap port, then
// hostile packed rings (a list whose later descriptor is from another lap, a list round the whole
// ring, an indirect descriptor with NEXT, good frames then a broken list in one burst). Each
// breaks only its own port; the other ports carry on and the port takes the next frontend,
// packed or split.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { Frontend } from './frontend.ts';
import { delNetns, makeNetns, must, NEEDS, ping, requires, TestDaemon, waitFor } from './helpers.ts';

const ME = [0x02, 0, 0, 0, 0, 0xab];
const MY_IP = [10, 87, 0, 9];
const NEXT = 1;
const INDIRECT = 4;
/** AVAIL/USED bits of a descriptor available in the first lap, and in the second. */
const LAP1 = 0x80;
const LAP2 = 0x8000;

function arpRequest(target: number[]): Uint8Array {
  const f = new Uint8Array(42);
  f.set([0xff, 0xff, 0xff, 0xff, 0xff, 0xff, ...ME, 0x08, 0x06], 0);
  f.set([0, 1, 0x08, 0, 6, 4, 0, 1, ...ME, ...MY_IP, 0, 0, 0, 0, 0, 0, ...target], 14);
  return f;
}

describe('vhost-user backend on packed rings against a test frontend, correct and hostile (root)', requires(NEEDS.tun), () => {
  const d = new TestDaemon();
  let c1 = '';
  let c2 = '';
  let c1Mac: number[] = [];
  const sock = (): string => `${d.dir}/vp.sock`;

  before(async () => {
    [c1, c2] = makeNetns(2) as [string, string];
    await d.start();
    d.ok('add-br', 'br0');
    d.ok('add-port', 'br0', 'c1', 'type=tap', `netns=${c1}`, 'ip=10.87.0.1/24');
    d.ok('add-port', 'br0', 'c2', 'type=tap', `netns=${c2}`, 'ip=10.87.0.2/24');
    d.ok('add-port', 'br0', 'vp', 'type=vhost-user', `path=${sock()}`, 'packed=on');
    c1Mac = JSON.parse(must('ip', ['-n', c1, '-j', 'link', 'show', 'dev', 'c1']))[0].address.split(':').map((x: string) => parseInt(x, 16));
  });

  after(async () => {
    await d.cleanup();
    delNetns([c1, c2]);
  });

  async function release(fe: Frontend): Promise<void> {
    fe.close();
    await waitFor(() => d.json('show', 'vp').port.peer.connected === false, 5000, 'the port to let the frontend go');
  }

  /** The daemon answers, the containers reach each other, and the port takes a packed and a split frontend. */
  async function unharmed(): Promise<void> {
    assert.equal(d.pier('show').code, 0, 'the daemon answers');
    assert.equal(ping(c1, '10.87.0.2', ['-c', '1']).code, 0, 'the other ports still forward');
    for (const packed of [true, false]) {
      const fe = new Frontend(sock());
      try {
        await fe.setup(64, 0n, fe.memTable(), packed);
        await waitFor(() => d.json('show', 'vp').port.peer.link === 'up', 5000, 'the port to take the next frontend (link up)');
        assert.equal(d.json('show', 'vp').port.peer.ring, packed ? 'packed' : 'split');
      } finally {
        await release(fe);
      }
    }
  }

  /** Write packed descriptor i of the ring at `ring`, flags last. */
  function writeDesc(fe: Frontend, ring: number, i: number, addr: number, len: number, id: number, flags: number): void {
    const dv = fe.space.dv;
    dv.setBigUint64(ring + 16 * i, BigInt(addr), true);
    dv.setUint32(ring + 16 * i + 8, len, true);
    dv.setUint16(ring + 16 * i + 12, id, true);
    Atomics.store(fe.space.u16, (ring + 16 * i + 14) >> 1, flags);
  }

  /** Write raw lists into the transmitq (vring 1) with `mutate`, kick, and expect the port to reset for `reason`. */
  async function hostileRing(mutate: (fe: Frontend, ring: number) => void, reason: RegExp, check = (): void => {}): Promise<void> {
    const fe = new Frontend(sock());
    try {
      await fe.setup(64, 0n, fe.memTable(), true);
      await waitFor(() => d.json('show', 'vp').port.peer.link === 'up', 5000, 'link up');
      mutate(fe, fe.packedQueues[1]!.descOff);
      fe.kicks[1]!.signal();
      assert.ok(await fe.closedByPeer(), 'pier reset the port');
      assert.match(d.json('show', 'vp').port.peer.lastError ?? '', reason);
      check();
    } finally {
      await release(fe);
    }
    await unharmed();
  }

  it('a correct packed frontend: the kernel answers its ARP request, contents checked, many laps of a 64-entry ring', async () => {
    const fe = new Frontend(sock());
    try {
      await fe.setup(64, 0n, fe.memTable(), true);
      const peer = d.json('show', 'vp').port.peer;
      assert.equal(peer.ring, 'packed');
      assert.ok(peer.features.negotiated.includes('RING_PACKED'));
      fe.postRx(32);
      for (let round = 0; round < 150; round++) {
        fe.sendFrame(arpRequest([10, 87, 0, 1]));
        const reply = await waitFor(() => fe.receivedFrames().find((f) => f[12] === 0x08 && f[13] === 0x06 && f[21] === 2), 2500, `an ARP reply (round ${round})`);
        assert.deepEqual([...reply.subarray(0, 6)], ME, 'addressed to the frontend');
        assert.deepEqual([...reply.subarray(28, 32)], [10, 87, 0, 1], 'from the address asked for');
        assert.deepEqual([...reply.subarray(6, 12)], c1Mac);
        fe.postRx(1);
      }
      const s = d.json('stats', 'vp')[0].counters;
      assert.ok(s.rx_packets >= 150 && s.tx_packets >= 150, JSON.stringify(s));
      assert.equal(s.rx_errors, 0);
    } finally {
      await release(fe);
    }
  });

  it('a list whose later descriptor is from another lap resets only that port', async () => {
    await hostileRing((fe, ring) => {
      writeDesc(fe, ring, 1, 0x100000, 64, 1, LAP2);
      writeDesc(fe, ring, 0, 0x100000, 12, 0, LAP1 | NEXT);
    }, /desc_not_avail/);
  });

  it('a list round the whole ring resets only that port', async () => {
    await hostileRing((fe, ring) => {
      for (let i = 63; i >= 0; i--) writeDesc(fe, ring, i, 0x100000, 64, i, LAP1 | NEXT);
    }, /chain_loop/);
  });

  it('an indirect descriptor with NEXT resets only that port', async () => {
    await hostileRing((fe, ring) => {
      writeDesc(fe, ring, 1, 0x100000, 64, 1, LAP1);
      writeDesc(fe, ring, 0, 0x101000, 32, 0, LAP1 | INDIRECT | NEXT);
    }, /indirect_with_next/);
  });

  it('good frames then a broken list in one burst: the good ones are forwarded, then the port resets', async () => {
    // Single-buffer lists are forwarded without a copy (lent from the frontend's memory); the
    // reset, which unmaps that memory, waits for them.
    const before = d.json('stats', 'c1')[0].counters.tx_packets;
    await hostileRing((fe, ring) => {
      writeDesc(fe, ring, 3, 0x102000, 64, 3, LAP2); // from another lap
      writeDesc(fe, ring, 2, 0x102000, 64, 2, LAP1 | NEXT);
      for (const [i, at] of [[1, 0x101000], [0, 0x100000]] as const) {
        fe.space.bytes.fill(0, at, at + 12);
        fe.space.bytes.set(arpRequest([10, 87, 0, 1]), at + 12);
        writeDesc(fe, ring, i, at, 12 + 42, i, LAP1);
      }
    }, /desc_not_avail/, () => {
      assert.ok(d.json('stats', 'c1')[0].counters.tx_packets - before >= 2, 'both good frames reached the tap');
    });
  });
});
