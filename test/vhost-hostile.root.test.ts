// pier's vhost-user backend against an in-process frontend (test/frontend.ts), as root: correct
// traffic with the kernel on a tap port (ARP answered, a TSO super-frame delivered as one), then a
// hostile frontend: malformed and unknown messages, descriptor loops, an avail index running ahead,
// buffers outside its memory. Each breaks at most its own port; the daemon and the other ports
// carry on, and the port takes the next frontend.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import * as P from '../src/vhost/protocol.ts';
import { checksum, sumWords } from '../src/dataplane/checksum.ts';
import { Frontend } from './frontend.ts';
import { delNetns, makeNetns, must, NEEDS, ping, requires, sleep, TestDaemon, waitFor } from './helpers.ts';

const ME = [0x02, 0, 0, 0, 0, 0xaa];
const MY_IP = [10, 80, 0, 9];

function arpRequest(target: number[]): Uint8Array {
  const f = new Uint8Array(42);
  f.set([0xff, 0xff, 0xff, 0xff, 0xff, 0xff, ...ME, 0x08, 0x06], 0);
  f.set([0, 1, 0x08, 0, 6, 4, 0, 1, ...ME, ...MY_IP, 0, 0, 0, 0, 0, 0, ...target], 14);
  return f;
}

/** An IPv4/TCP super-frame as a Linux sender hands it to virtio: GSO TCPV4, partial checksum. */
function tcpSuperFrame(dstMac: number[], dst: number[], payload: number, mss: number): { frame: Uint8Array; hdr: Uint8Array } {
  const f = new Uint8Array(14 + 20 + 20 + payload);
  const dv = new DataView(f.buffer);
  f.set([...dstMac, ...ME, 0x08, 0x00], 0);
  f.set([0x45, 0, 0, 0, 0x12, 0x34, 0x40, 0, 64, 6, 0, 0, ...MY_IP, ...dst], 14);
  dv.setUint16(16, 20 + 20 + payload);
  dv.setUint16(24, checksum(f, 14, 34));
  dv.setUint16(34, 40000); // source port
  dv.setUint16(36, 5201); // destination port: nobody listens, the kernel answers RST
  dv.setUint32(38, 1000);
  f[46] = 0x50; // data offset 5 words
  f[47] = 0x18; // PSH, ACK
  dv.setUint16(48, 65535);
  for (let i = 0; i < payload; i++) f[54 + i] = i & 0xff;
  // Partial checksum: the field holds the (folded, not complemented) pseudo-header sum.
  let s = sumWords(f, 26, 34, 0) + 6 + 20 + payload;
  while (s > 0xffff) s = (s & 0xffff) + (s >>> 16);
  dv.setUint16(50, s);
  const hdr = new Uint8Array(12);
  const hv = new DataView(hdr.buffer);
  hdr[0] = 1; // NEEDS_CSUM
  hdr[1] = 1; // GSO_TCPV4
  hv.setUint16(2, 54, true);
  hv.setUint16(4, mss, true);
  hv.setUint16(6, 34, true);
  hv.setUint16(8, 16, true);
  return { frame: f, hdr };
}

describe('vhost-user backend against a test frontend, correct and hostile (root)', requires(NEEDS.tun, NEEDS.python3), () => {
  const d = new TestDaemon();
  let c1 = '';
  let c2 = '';
  let c1Mac: number[] = [];
  const sock = (): string => `${d.dir}/vu.sock`;

  before(async () => {
    [c1, c2] = makeNetns(2) as [string, string];
    await d.start();
    d.ok('add-br', 'br0');
    d.ok('add-port', 'br0', 'c1', 'type=tap', `netns=${c1}`, 'ip=10.80.0.1/24');
    d.ok('add-port', 'br0', 'c2', 'type=tap', `netns=${c2}`, 'ip=10.80.0.2/24');
    d.ok('add-port', 'br0', 'vu', 'type=vhost-user', `path=${sock()}`);
    c1Mac = JSON.parse(must('ip', ['-n', c1, '-j', 'link', 'show', 'dev', 'c1']))[0].address.split(':').map((x: string) => parseInt(x, 16));
  });

  after(async () => {
    await d.cleanup();
    delNetns([c1, c2]);
  });

  /** Close the frontend and wait until the port has let it go (free for the next one). */
  async function release(fe: Frontend): Promise<void> {
    fe.close();
    await waitFor(() => d.json('show', 'vu').port.peer.connected === false, 5000, () => `the port to let the frontend go: ${JSON.stringify(d.json('show', 'vu').port.peer)}`);
  }

  /** The daemon answers, the two containers still reach each other, and the port is free again. */
  async function unharmed(): Promise<void> {
    assert.equal(d.pier('show').code, 0, 'the daemon answers');
    assert.equal(ping(c1, '10.80.0.2', ['-c', '1']).code, 0, 'the other ports still forward');
    const fe = new Frontend(sock());
    try {
      await fe.setup();
      await waitFor(() => d.json('show', 'vu').port.peer.link === 'up', 5000, 'the port to take the next frontend (link up)');
    } finally {
      await release(fe);
    }
  }

  it('a correct frontend: the kernel answers its ARP request, contents checked', async () => {
    const fe = new Frontend(sock());
    try {
      await fe.setup();
      fe.postRx(32);
      fe.sendFrame(arpRequest([10, 80, 0, 1]));
      const reply = await waitFor(() => fe.receivedFrames().find((f) => f[12] === 0x08 && f[13] === 0x06 && f[21] === 2), 2500, 'an ARP reply');
      assert.deepEqual([...reply.subarray(0, 6)], ME, 'addressed to the frontend');
      assert.deepEqual([...reply.subarray(28, 32)], [10, 80, 0, 1], 'from the address asked for');
      assert.deepEqual([...reply.subarray(6, 12)], c1Mac);
    } finally {
      await release(fe);
    }
  });

  it('a TSO super-frame from the frontend reaches the tap as one GSO frame, and the kernel answers it', async () => {
    const fe = new Frontend(sock());
    try {
      await fe.setup();
      fe.postRx(32);
      const before = d.json('stats', 'c1')[0].counters.tx_gso_packets;
      const { frame, hdr } = tcpSuperFrame(c1Mac, [10, 80, 0, 1], 4000, 1000);
      fe.sendFrame(frame, hdr);
      // The kernel took the super-frame as valid TCP and answers with a reset.
      await waitFor(() => fe.receivedFrames().some((f) => f[23] === 6 && (f[47]! & 0x04) !== 0), 2500, 'the kernel\'s TCP reset');
      assert.equal(d.json('stats', 'c1')[0].counters.tx_gso_packets, before + 1, 'written to the tap as one GSO frame');
    } finally {
      await release(fe);
    }
  });

  it('TSO super-frames from the tap reach the vhost-user port as super-frames (and back)', async () => {
    // The frontend answers ARP for its address and reflects every TCP frame with addresses and
    // ports swapped (checksums stay valid), so a socket in c1 connecting to it talks to itself
    // (a simultaneous open) and its bulk data crosses pier both ways as the kernel sends it.
    const fe = new Frontend(sock());
    let gsoSeen = 0;
    let biggest = 0;
    let running = true;
    let pump: Promise<void> | undefined;
    try {
      await fe.setup();
      fe.postRx(64, 65600);
      let pumpError: unknown;
      pump = (async () => {
        while (running) {
          for (const { hdr, frame } of fe.receivedPackets()) {
            if (hdr[1] !== 0) gsoSeen++;
            biggest = Math.max(biggest, frame.length);
            const f = new Uint8Array(frame);
            if (f[12] === 0x08 && f[13] === 0x06 && f[21] === 1 && f.subarray(38, 42).every((x, i) => x === MY_IP[i])) {
              const r = arpRequest([]);
              r.set(f.subarray(6, 12), 0);
              r[21] = 2;
              r.set([...ME, ...MY_IP], 22);
              r.set(f.subarray(22, 32), 32);
              fe.sendFrame(r);
            } else if (f[12] === 0x08 && f[13] === 0x00 && f[23] === 6) {
              const mac = f.slice(0, 6); f.copyWithin(0, 6, 12); f.set(mac, 6);
              const ip = f.slice(26, 30); f.copyWithin(26, 30, 34); f.set(ip, 30);
              const port = f.slice(34, 36); f.copyWithin(34, 36, 38); f.set(port, 36);
              fe.sendFrame(f, hdr);
            }
            fe.postRx(1, 65600);
          }
          await sleep(2); // pacing: the reflector polls the ring (no call eventfd wait) and yields to the test's own flow
        }
      })().catch((e: unknown) => {
        // Keep the test's own flow (client exit, then the asserts and finally) in charge.
        pumpError = e;
        running = false;
      });
      const py = [
        'import socket',
        's = socket.socket(); s.bind(("10.80.0.1", 40000)); s.settimeout(20)',
        's.connect(("10.80.0.9", 5201))',
        'data = bytes(range(256)) * 4096',
        'got = bytearray()',
        'import threading',
        't = threading.Thread(target=lambda: s.sendall(data)); t.start()',
        'while len(got) < len(data): got += s.recv(1 << 20)',
        't.join(); print("ok" if bytes(got) == data else "mismatch")',
      ].join('\n');
      const { spawn } = await import('node:child_process');
      const client = spawn('ip', ['netns', 'exec', c1, 'python3', '-c', py], { stdio: ['ignore', 'pipe', 'pipe'] });
      let out = '';
      client.stdout.on('data', (x) => (out += x));
      client.stderr.on('data', (x) => (out += x));
      await new Promise((r) => client.once('exit', r));
      running = false;
      await pump;
      assert.equal(pumpError, undefined, `the reflector failed: ${String(pumpError)}`);
      assert.match(out, /^ok/, `the reflected stream came back intact: ${out}`);
      assert.ok(gsoSeen > 0, 'the frontend received GSO super-frames');
      assert.ok(biggest > 9000, `largest frame ${biggest} bytes: super-frames, not MTU-sized segments`);
      assert.ok(d.json('stats', 'c1')[0].counters.tx_gso_packets > 0, 'and the reflected super-frames went back to the tap whole');
    } finally {
      running = false;
      await pump;
      await release(fe);
    }
  });

  it('unknown and malformed messages are refused with an answer; the connection stays', async () => {
    const fe = new Frontend(sock());
    try {
      await fe.setup();
      const need = P.VHOST_USER_VERSION | P.FLAG_NEED_REPLY;
      fe.send(99, new Uint8Array(0), [], need);
      assert.notEqual((await fe.reply()).body.getBigUint64(0, true), 0n, 'unknown request: failure');
      const mt = fe.memTable(2, 1);
      fe.send(P.Req.SET_MEM_TABLE, mt.payload, mt.fds, need);
      assert.notEqual((await fe.reply()).body.getBigUint64(0, true), 0n, 'regions without fds: failure');
      fe.send(P.Req.SET_VRING_NUM, fe.state(200, 256), [], need);
      assert.notEqual((await fe.reply()).body.getBigUint64(0, true), 0n, 'vring index out of range: failure');
      fe.send(P.Req.SET_VRING_NUM, fe.state(0, 300), [], need);
      assert.notEqual((await fe.reply()).body.getBigUint64(0, true), 0n, 'size not a power of two: failure');
      fe.send(P.Req.SET_FEATURES, fe.u64(1n << 63n), [], need);
      assert.notEqual((await fe.reply()).body.getBigUint64(0, true), 0n, 'a feature never offered: failure');
      fe.send(P.Req.GET_FEATURES);
      assert.ok((await fe.reply()).body.getBigUint64(0, true) > 0n, 'still talking');
      const refused = d.json('show', 'vu').port.peer.refused;
      assert.ok(Object.keys(refused).length >= 4, JSON.stringify(refused));
    } finally {
      await release(fe);
    }
    await unharmed();
  });

  it('an oversized or wrongly versioned message drops that frontend only', async () => {
    for (const [flags, size] of [[P.VHOST_USER_VERSION, 100000], [0x2, 0]] as const) {
      const fe = new Frontend(sock());
      try {
        fe.send(P.Req.GET_FEATURES, new Uint8Array(0), [], flags, size);
        assert.ok(await fe.closedByPeer(), 'pier closed the connection');
      } finally {
        await release(fe);
      }
      await unharmed();
    }
    assert.ok(d.json('show', 'vu').port.peer.protocolErrors >= 2);
  });

  /** Post one raw chain on vring 1 after `mutate` wrote its descriptors, and kick. */
  async function hostileRing(mutate: (fe: Frontend, desc: number, avail: number) => void, reason: RegExp, check = (): void => {}): Promise<void> {
    const fe = new Frontend(sock());
    try {
      await fe.setup();
      const q = fe.queues[1]! as unknown as { descOff: number; availOff: number };
      mutate(fe, q.descOff, q.availOff);
      fe.kicks[1]!.signal();
      assert.ok(await fe.closedByPeer(), 'pier reset the port');
      assert.match(d.json('show', 'vu').port.peer.lastError ?? '', reason);
      check();
    } finally {
      await release(fe);
    }
    await unharmed();
  }

  function writeDesc(fe: Frontend, table: number, i: number, addr: bigint, len: number, flags: number, next: number): void {
    const dv = fe.space.dv;
    dv.setBigUint64(table + 16 * i, addr, true);
    dv.setUint32(table + 16 * i + 8, len, true);
    dv.setUint16(table + 16 * i + 12, flags, true);
    dv.setUint16(table + 16 * i + 14, next, true);
  }

  function publishHead(fe: Frontend, avail: number, head: number, idx: number): void {
    fe.space.dv.setUint16(avail + 4, head, true);
    fe.space.dv.setUint16(avail + 2, idx, true);
  }

  it('a descriptor loop resets only that port', async () => {
    await hostileRing((fe, desc, avail) => {
      writeDesc(fe, desc, 0, 0x100000n, 64, 1, 1);
      writeDesc(fe, desc, 1, 0x100000n, 64, 1, 0); // 0 -> 1 -> 0 -> ...
      publishHead(fe, avail, 0, 1);
    }, /chain_loop/);
  });

  it('good frames then a broken chain in one burst: the good ones are forwarded, then the port resets', async () => {
    // The good frames are single-buffer chains, which pier forwards without copying them out
    // of the frontend's memory; the reset (which unmaps that memory) must wait for them.
    const before = d.json('stats', 'c1')[0].counters.tx_packets;
    await hostileRing((fe, desc, avail) => {
      for (const [i, at] of [[0, 0x100000], [1, 0x101000]] as const) {
        fe.space.bytes.fill(0, at, at + 12);
        fe.space.bytes.set(arpRequest([10, 80, 0, 1]), at + 12);
        writeDesc(fe, desc, i, BigInt(at), 12 + 42, 0, 0);
        fe.space.dv.setUint16(avail + 4 + 2 * i, i, true);
      }
      writeDesc(fe, desc, 2, 0x102000n, 64, 1, 3);
      writeDesc(fe, desc, 3, 0x102000n, 64, 1, 2); // 2 -> 3 -> 2 -> ...
      fe.space.dv.setUint16(avail + 4 + 4, 2, true);
      fe.space.dv.setUint16(avail + 2, 3, true);
    }, /chain_loop/, () => {
      assert.ok(d.json('stats', 'c1')[0].counters.tx_packets - before >= 2, 'both good frames reached the tap');
    });
  });

  it('a buffer outside the memory table resets only that port', async () => {
    await hostileRing((fe, desc, avail) => {
      writeDesc(fe, desc, 0, 0x7fff00000000n, 64, 0, 0);
      publishHead(fe, avail, 0, 1);
    }, /desc_unmapped/);
  });

  it('an avail index running more than the queue size ahead resets only that port', async () => {
    await hostileRing((fe, _desc, avail) => publishHead(fe, avail, 0, 1000), /avail_idx_ahead/);
  });

  it('an indirect table inside an indirect table resets only that port', async () => {
    await hostileRing((fe, desc, avail) => {
      const table = 0x200000;
      writeDesc(fe, desc, 0, BigInt(table), 32, 4, 0);
      writeDesc(fe, table, 0, BigInt(table + 64), 16, 4, 0);
      publishHead(fe, avail, 0, 1);
    }, /indirect_nested/);
  });
});
