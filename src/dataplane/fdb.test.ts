import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { Fdb, LEARN_FULL, LEARN_LIMIT, LEARN_STATIC, LEARNED, macFromString, macToString, slotsFor } from './fdb.ts';

// Deterministic by default; set FC_SEED to explore other inputs (a failure prints its seed).
fc.configureGlobal({ seed: Number(process.env.FC_SEED ?? 20241124) });

/** The slot `mac` lands in when it is alone in an empty table of `capacity` (white-box: reads the key array). */
function homeSlot(capacity: number, mac: number): number {
  const f = new Fdb(capacity);
  f.learn(mac, 1, 0);
  const keys = (f as unknown as { keys: Float64Array }).keys;
  const i = keys.indexOf(mac);
  assert.ok(i >= 0);
  return i;
}

/** Distinct unicast MACs grouped by home slot in a table of `capacity`. */
function macsBySlot(capacity: number, count: number): Map<number, number[]> {
  const bySlot = new Map<number, number[]>();
  for (let k = 0; k < count; k++) {
    const mac = 0x020000000000 + k * 0x10001; // locally administered unicast, varied high and low halves
    const s = homeSlot(capacity, mac);
    let l = bySlot.get(s);
    if (!l) bySlot.set(s, (l = []));
    l.push(mac);
  }
  return bySlot;
}

function entryMap(f: Fdb, now: number): Map<string, number> {
  return new Map(f.entries(now).map((e) => [e.mac, e.port]));
}

describe('macToString / macFromString', () => {
  test('format known addresses', () => {
    assert.equal(macToString(0), '00:00:00:00:00:00');
    assert.equal(macToString(0x0123456789ab), '01:23:45:67:89:ab');
    assert.equal(macToString(0xffffffffffff), 'ff:ff:ff:ff:ff:ff');
    assert.equal(macToString(0x020000000001), '02:00:00:00:00:01');
  });

  test('parse known addresses, either case', () => {
    assert.equal(macFromString('00:00:00:00:00:00'), 0);
    assert.equal(macFromString('01:23:45:67:89:ab'), 0x0123456789ab);
    assert.equal(macFromString('01:23:45:67:89:AB'), 0x0123456789ab);
    assert.equal(macFromString('ff:ff:ff:ff:ff:ff'), 0xffffffffffff);
  });

  test('round trip over all 48-bit values (property)', () => {
    fc.assert(
      fc.property(fc.bigInt({ min: 0n, max: 2n ** 48n - 1n }), (big) => {
        const mac = Number(big);
        const s = macToString(mac);
        assert.match(s, /^([0-9a-f]{2}:){5}[0-9a-f]{2}$/);
        assert.equal(macFromString(s), mac);
      }),
    );
  });
});

describe('Fdb basics', () => {
  test('capacity must be a power of two', () => {
    assert.throws(() => new Fdb(12), /power of two/);
    assert.throws(() => new Fdb(3), /power of two/);
    assert.doesNotThrow(() => new Fdb(16));
  });

  test('unknown address looks up as -1', () => {
    const f = new Fdb(16);
    assert.equal(f.lookup(0x020000000001, 0), -1);
    assert.equal(f.size, 0);
  });

  test('learn then lookup; extreme addresses 0 and ff:ff:ff:ff:ff:ff', () => {
    const f = new Fdb(16);
    f.learn(0, 3, 0);
    f.learn(0xffffffffffff, 4, 0);
    f.learn(0x020000000001, 5, 0);
    assert.equal(f.lookup(0, 0), 3);
    assert.equal(f.lookup(0xffffffffffff, 0), 4);
    assert.equal(f.lookup(0x020000000001, 0), 5);
    assert.equal(f.lookup(0x020000000002, 0), -1);
    assert.equal(f.size, 3);
  });

  test('re-learning moves the station and refreshes without growing', () => {
    const f = new Fdb(16, 10);
    const a = 0x020000000001;
    f.learn(a, 1, 0);
    f.learn(a, 2, 8);
    assert.equal(f.size, 1);
    assert.equal(f.lookup(a, 8), 2);
    // refreshed at t=8, so still valid at t=18 (it would have expired at t=11 otherwise)
    assert.equal(f.lookup(a, 18), 2);
    assert.equal(f.lookup(a, 18.5), -1);
  });

  test('delete: present true, absent false, size tracks', () => {
    const f = new Fdb(16);
    const a = 0x020000000001;
    const b = 0x020000000002;
    f.learn(a, 1, 0);
    f.learn(b, 2, 0);
    assert.equal(f.delete(a), true);
    assert.equal(f.delete(a), false);
    assert.equal(f.delete(0x020000000003), false);
    assert.equal(f.size, 1);
    assert.equal(f.lookup(a, 0), -1);
    assert.equal(f.lookup(b, 0), 2);
  });

  test('entries lists mac strings, ports and rounded ages', () => {
    const f = new Fdb(16);
    f.learn(0x0123456789ab, 7, 10);
    f.learn(0x020000000001, 8, 12.4);
    const e = f.entries(15).sort((x, y) => x.mac.localeCompare(y.mac));
    assert.deepEqual(e, [
      { mac: '01:23:45:67:89:ab', vlan: 0, port: 7, age: 5 },
      { mac: '02:00:00:00:00:01', vlan: 0, port: 8, age: 3 },
    ]);
  });

  test('flushPort removes exactly the addresses learned on that port', () => {
    const f = new Fdb(64);
    for (let k = 0; k < 30; k++) f.learn(0x020000000000 + k, 1 + (k % 3), 0);
    assert.equal(f.flushPort(2), 10);
    assert.equal(f.size, 20);
    for (let k = 0; k < 30; k++) assert.equal(f.lookup(0x020000000000 + k, 0), k % 3 === 1 ? -1 : 1 + (k % 3));
    assert.equal(f.flushPort(2), 0);
    assert.equal(f.flushPort(99), 0);
  });
});

describe('Fdb collisions and backward-shift deletion', () => {
  const CAP = 16;
  const bySlot = macsBySlot(CAP, 4000);

  test('the hash spreads keys over every slot (sanity for the collision tests)', () => {
    assert.equal(bySlot.size, CAP);
    for (const l of bySlot.values()) assert.ok(l.length >= 4);
  });

  test('a cluster of keys sharing one home slot: delete each position, the rest stay reachable', () => {
    const cluster = bySlot.get(5)!.slice(0, 4);
    for (let victim = 0; victim < cluster.length; victim++) {
      const f = new Fdb(CAP);
      cluster.forEach((m, i) => f.learn(m, 10 + i, 0));
      assert.equal(f.delete(cluster[victim]!), true);
      cluster.forEach((m, i) => assert.equal(f.lookup(m, 0), i === victim ? -1 : 10 + i, `victim ${victim}, key ${i}`));
      assert.equal(f.size, 3);
    }
  });

  test('clusters that wrap around the end of the table', () => {
    // two keys homed in the last slot, two in slot 0, one in slot 1: probe runs cross the wrap
    const keys = [...bySlot.get(CAP - 1)!.slice(0, 2), ...bySlot.get(0)!.slice(0, 2), bySlot.get(1)![0]!];
    for (let victim = 0; victim < keys.length; victim++) {
      const f = new Fdb(CAP);
      keys.forEach((m, i) => f.learn(m, 10 + i, 0));
      assert.equal(f.delete(keys[victim]!), true);
      keys.forEach((m, i) => assert.equal(f.lookup(m, 0), i === victim ? -1 : 10 + i, `victim ${victim}, key ${i}`));
      // deleting everything that is left empties the table
      keys.forEach((m, i) => i !== victim && assert.equal(f.delete(m), true));
      assert.equal(f.size, 0);
      assert.deepEqual(f.entries(0), []);
    }
  });

  test('a key homed after a deleted slot is not moved before its home', () => {
    // key A at slot 3, key B homed at slot 4 sits in slot 4; deleting A must leave B findable
    const a = bySlot.get(3)![0]!;
    const b = bySlot.get(4)![0]!;
    const c = bySlot.get(3)![1]!; // pushed to slot 4 or 5 depending on insertion order
    const f = new Fdb(CAP);
    f.learn(a, 1, 0);
    f.learn(b, 2, 0);
    f.learn(c, 3, 0);
    assert.equal(f.delete(a), true);
    assert.equal(f.lookup(b, 0), 2);
    assert.equal(f.lookup(c, 0), 3);
    assert.equal(f.delete(b), true);
    assert.equal(f.lookup(c, 0), 3);
  });

  test('a table made for N entries (pier daemon --fdb-size N) holds N, not the 3/4 of its rounded-up slots', () => {
    const f = new Fdb(slotsFor(100), 300, 100);
    assert.equal(f.capacity, 256);
    for (let i = 0; i < 100; i++) assert.equal(f.learn(0x020000000000 + i, 1, 0), LEARNED);
    assert.equal(f.learn(0x020000000000 + 100, 1, 0), LEARN_FULL);
    assert.equal(f.size, 100);
    assert.equal(new Fdb(64).maxEntries, 48, 'by default 3/4 of the slots');
    assert.equal(new Fdb(64, 300, 1000).maxEntries, 48, 'never past 3/4, so a probe always ends');
  });

  test('property: random learn/delete sequences agree with a reference Map (small table, many collisions)', () => {
    // Universe: 4 keys from each of 8 home slots, including the wrap-around slots, plus two random ones.
    const universe: number[] = [];
    for (const s of [0, 1, 2, 7, 8, 13, 14, 15]) universe.push(...bySlot.get(s)!.slice(0, 4));
    universe.push(0, 0xfffffffffffe);
    const maxSize = (CAP * 3) / 4;
    const op = fc.record({
      kind: fc.constantFrom('learn', 'learn', 'delete'),
      key: fc.integer({ min: 0, max: universe.length - 1 }),
      port: fc.integer({ min: 1, max: 6 }),
    });
    fc.assert(
      fc.property(fc.array(op, { maxLength: 80 }), (ops) => {
        const f = new Fdb(CAP);
        const ref = new Map<number, number>();
        let full = 0;
        for (const o of ops) {
          const mac = universe[o.key]!;
          if (o.kind === 'learn') {
            f.learn(mac, o.port, 0);
            if (ref.has(mac) || ref.size < maxSize) ref.set(mac, o.port);
            else full++;
          } else {
            assert.equal(f.delete(mac), ref.delete(mac));
          }
          assert.equal(f.size, ref.size);
          assert.equal(f.full, full);
          for (const m of universe) assert.equal(f.lookup(m, 0), ref.get(m) ?? -1);
        }
        assert.deepEqual(entryMap(f, 0), new Map([...ref].map(([m, p]) => [macToString(m), p])));
      }),
      { numRuns: 300 },
    );
  });

  test('property: arbitrary 48-bit keys in a large table agree with a reference Map', () => {
    const mac = fc.bigInt({ min: 0n, max: 2n ** 48n - 1n }).map(Number);
    fc.assert(
      fc.property(fc.array(fc.tuple(fc.boolean(), mac, fc.integer({ min: 0, max: 100 })), { maxLength: 200 }), (ops) => {
        const f = new Fdb(256);
        const ref = new Map<number, number>();
        const seen: number[] = [];
        for (const [isDelete, m0, port] of ops) {
          // deletes mostly target something already inserted
          const m = isDelete && seen.length > 0 ? seen[m0 % seen.length]! : m0;
          if (isDelete) assert.equal(f.delete(m), ref.delete(m));
          else {
            f.learn(m, port, 0);
            ref.set(m, port);
            seen.push(m);
          }
        }
        assert.equal(f.size, ref.size);
        for (const m of seen) assert.equal(f.lookup(m, 0), ref.get(m) ?? -1);
      }),
      { numRuns: 100 },
    );
  });
});

describe('Fdb aging', () => {
  test('lookup hides an entry older than agingSeconds; the boundary itself is still valid', () => {
    const f = new Fdb(16, 300);
    f.learn(0x020000000001, 1, 1000);
    assert.equal(f.lookup(0x020000000001, 1300), 1);
    assert.equal(f.lookup(0x020000000001, 1300.001), -1);
  });

  test('age removes only entries older than agingSeconds and returns the count', () => {
    const f = new Fdb(16, 10);
    f.learn(1, 1, 0);
    f.learn(2, 2, 5);
    f.learn(3, 3, 10);
    assert.equal(f.age(10), 0); // 10 - 0 = 10 is not older than 10
    assert.equal(f.age(10.5), 1);
    assert.equal(f.lookup(1, 10.5), -1);
    assert.equal(f.lookup(2, 10.5), 2);
    assert.equal(f.age(15), 0);
    assert.equal(f.age(15.5), 1);
    assert.equal(f.lookup(3, 15.5), 3);
    assert.equal(f.age(100), 1);
    assert.equal(f.size, 0);
  });

  test('agingSeconds can be changed at run time', () => {
    const f = new Fdb(16, 300);
    f.learn(1, 1, 0);
    f.agingSeconds = 5;
    assert.equal(f.lookup(1, 6), -1);
    assert.equal(f.age(6), 1);
  });

  test('property: age(now) removes exactly the entries last refreshed more than agingSeconds ago', () => {
    // Twelve keys (the most a 16-slot table holds) crowded into four neighbouring home slots across
    // the wrap, so removing one shifts others back and their timestamps must move with them.
    const CAP = 16;
    const bySlot = macsBySlot(CAP, 4000);
    const universe = [14, 15, 0, 1].flatMap((s) => bySlot.get(s)!.slice(0, 3));
    fc.assert(
      fc.property(
        fc.array(fc.tuple(fc.integer({ min: 0, max: universe.length - 1 }), fc.integer({ min: 1, max: 8 }), fc.integer({ min: 0, max: 1000 })), { maxLength: 60 }),
        fc.integer({ min: 1, max: 500 }),
        fc.integer({ min: 0, max: 1500 }),
        (learns, aging, later) => {
          const f = new Fdb(CAP, aging);
          const ref = new Map<number, { port: number; t: number }>();
          // time moves forward: sort by time, the last refresh wins
          learns.sort((x, y) => x[2] - y[2]);
          for (const [k, port, t] of learns) {
            f.learn(universe[k]!, port, t);
            ref.set(universe[k]!, { port, t });
          }
          const now = (learns.at(-1)?.[2] ?? 0) + later;
          const old = [...ref].filter(([, v]) => now - v.t > aging);
          assert.equal(f.age(now), old.length);
          assert.equal(f.size, ref.size - old.length);
          for (const [m, v] of ref) {
            const expired = now - v.t > aging;
            assert.equal(f.lookup(m, now), expired ? -1 : v.port);
            // an expired key is really gone, not just hidden: it is absent even when looked up "in the past"
            assert.equal(f.lookup(m, v.t), expired ? -1 : v.port);
          }
        },
      ),
      { numRuns: 300 },
    );
  });
});

describe('Fdb capacity', () => {
  test('learning stops at 3/4 of capacity and counts `full`; known keys still refresh', () => {
    const f = new Fdb(16);
    for (let k = 1; k <= 12; k++) f.learn(0x020000000000 + k, k, 0);
    assert.equal(f.size, 12);
    assert.equal(f.full, 0);
    f.learn(0x020000000000 + 13, 13, 0);
    f.learn(0x020000000000 + 14, 14, 0);
    assert.equal(f.size, 12);
    assert.equal(f.full, 2);
    assert.equal(f.lookup(0x020000000000 + 13, 0), -1);
    // an existing station moving port while the table is full is still followed
    f.learn(0x020000000000 + 1, 99, 0);
    assert.equal(f.lookup(0x020000000000 + 1, 0), 99);
    assert.equal(f.full, 2);
    // making room lets the next new station in
    assert.equal(f.delete(0x020000000000 + 2), true);
    f.learn(0x020000000000 + 13, 13, 0);
    assert.equal(f.lookup(0x020000000000 + 13, 0), 13);
    assert.equal(f.full, 2);
    assert.equal(f.size, 12);
  });

  test('a full default-size table still answers lookups for unknown keys', () => {
    const f = new Fdb();
    assert.equal(f.capacity, 8192);
    for (let k = 0; k < 7000; k++) f.learn(0x020000000000 + k * 7919, 1, 0);
    assert.equal(f.size, 6144);
    assert.equal(f.full, 7000 - 6144);
    assert.equal(f.lookup(0x0a0000000000, 0), -1);
  });

  // Regression: with capacity 1 or 2 the 3/4 limit still let every slot fill, and a probe for
  // an absent key never ended. Capacities below 16 (and non-integers) are refused.
  test('tiny or malformed capacities are refused', () => {
    for (const c of [0, 0.5, 1, 2, 8, 24]) assert.throws(() => new Fdb(c), /power of two of at least 16/);
    const f = new Fdb(16);
    for (let m = 1; m <= 64; m++) f.learn(m, 1, 0);
    assert.equal(f.size, 12);
    assert.ok(f.full > 0);
    assert.equal(f.lookup(1000, 0), -1, 'a probe for an absent key ends');
  });
});

describe('Fdb per VLAN: the key is (VLAN, MAC)', () => {
  const M = 0x020000000001;

  test('the same MAC in two VLANs is two entries, each with its own port', () => {
    const f = new Fdb(16);
    f.learn(M, 1, 0, 10);
    f.learn(M, 2, 0, 20);
    assert.equal(f.size, 2);
    assert.equal(f.lookup(M, 0, 10), 1);
    assert.equal(f.lookup(M, 0, 20), 2);
    assert.equal(f.lookup(M, 0), -1, 'VLAN 0 knows nothing of it');
    assert.equal(f.lookup(M, 0, 30), -1);
    const e = f.entries(0).sort((x, y) => x.vlan - y.vlan);
    assert.deepEqual(e.map((x) => [x.vlan, x.port]), [[10, 1], [20, 2]]);
  });

  test('delete and re-learn touch one VLAN only', () => {
    const f = new Fdb(16);
    f.learn(M, 1, 0, 10);
    f.learn(M, 2, 0, 20);
    f.learn(M, 3, 0, 10); // moved within VLAN 10
    assert.equal(f.size, 2);
    assert.equal(f.lookup(M, 0, 10), 3);
    assert.equal(f.delete(M, 20), true);
    assert.equal(f.delete(M, 20), false);
    assert.equal(f.lookup(M, 0, 10), 3);
  });

  test('flushPort forgets a port in every VLAN; aging sees every VLAN', () => {
    const f = new Fdb(16, 10);
    f.learn(M, 1, 0, 10);
    f.learn(M, 1, 5, 20);
    f.learn(M + 1, 2, 0, 10);
    assert.equal(f.flushPort(1), 2);
    assert.equal(f.lookup(M + 1, 0, 10), 2);
    f.learn(M, 3, 5, 4094);
    assert.equal(f.age(12), 1, 'the entry of second 0 aged out');
    assert.equal(f.lookup(M, 12, 4094), 3);
  });

  test('property: random (VLAN, MAC) learn/delete sequences agree with a reference Map (small table)', () => {
    const vids = [0, 1, 10, 4094];
    fc.assert(fc.property(fc.array(fc.tuple(fc.boolean(), fc.integer({ min: 0, max: 5 }), fc.constantFrom(...vids), fc.integer({ min: 1, max: 9 })), { maxLength: 60 }), (ops) => {
      const f = new Fdb(16);
      const ref = new Map<string, number>();
      for (const [add, m, v, port] of ops) {
        const mac = 0x020000000000 + m;
        if (add) {
          if (!ref.has(`${v}/${mac}`) && ref.size >= 12) continue; // the 3/4 limit
          f.learn(mac, port, 0, v);
          ref.set(`${v}/${mac}`, port);
        } else {
          assert.equal(f.delete(mac, v), ref.delete(`${v}/${mac}`));
        }
      }
      assert.equal(f.size, ref.size);
      for (let m = 0; m <= 5; m++) for (const v of vids) assert.equal(f.lookup(0x020000000000 + m, 0, v), ref.get(`${v}/${0x020000000000 + m}`) ?? -1);
    }));
  });
});

describe('Fdb: no port takes the table over or fills it (port security)', () => {
  const M = (k: number): number => 0x020000000000 + k;

  test('a static entry is never moved by learning, never aged, and answers lookups', () => {
    const f = new Fdb(64, 10);
    assert.ok(f.addStatic(M(1), 1));
    assert.equal(f.learn(M(1), 2, 5), LEARN_STATIC, 'another port sending from a secured MAC does not take it');
    assert.equal(f.lookup(M(1), 5), 1);
    assert.equal(f.learn(M(1), 1, 5), LEARNED, 'its own port is fine');
    assert.equal(f.age(1000), 0, 'never aged');
    assert.equal(f.lookup(M(1), 1000), 1);
    assert.deepEqual(f.entries(0), [{ mac: macToString(M(1)), vlan: 0, port: 1, age: 0, static: true }]);
    assert.equal(f.heldBy(1), 0, 'static entries are not counted against a limit');
    assert.equal(f.staticPort(M(1)), 1);
    assert.equal(f.staticPort(M(1), 7), -1, 'per VLAN');
    f.learn(M(2), 3, 5);
    assert.equal(f.staticPort(M(2)), -1, 'a learned entry is not static');
    assert.equal(f.flushPort(1, false), 0, 'a flush of learned entries leaves it');
    assert.equal(f.flushStatic(1), 1);
    assert.equal(f.lookup(M(1), 0), -1);
  });

  test('a learned entry of the same MAC is replaced by the static one', () => {
    const f = new Fdb(64);
    f.learn(M(1), 7, 0);
    assert.equal(f.heldBy(7), 1);
    f.addStatic(M(1), 1);
    assert.equal(f.heldBy(7), 0);
    assert.equal(f.lookup(M(1), 0), 1);
  });

  test('mac-limit: a port learns at most its limit; refreshes and other ports are unaffected', () => {
    const f = new Fdb(1024);
    f.setLimit(3, 4);
    for (let k = 0; k < 4; k++) assert.equal(f.learn(M(k), 3, 0), LEARNED);
    assert.equal(f.learn(M(10), 3, 0), LEARN_LIMIT);
    assert.equal(f.lookup(M(10), 0), -1);
    assert.equal(f.learn(M(0), 3, 1), LEARNED, 'a known source refreshes');
    assert.equal(f.learn(M(11), 4, 0), LEARNED, 'another port learns');
    // A station moving onto a port at its limit is not followed.
    assert.equal(f.learn(M(11), 3, 2), LEARN_LIMIT);
    assert.equal(f.lookup(M(11), 2), 4);
    assert.deepEqual(f.perPort(), [{ port: 3, learned: 4, limit: 4 }, { port: 4, learned: 1, limit: 0 }]);
    f.delete(M(0));
    assert.equal(f.learn(M(10), 3, 3), LEARNED, 'room again after a deletion');
  });

  test('moves are followed and counted; a MAC moving back and forth within a second is flapping', () => {
    const f = new Fdb(64);
    f.learn(M(1), 1, 0);
    f.learn(M(1), 2, 0.1);
    assert.equal(f.lookup(M(1), 0.1), 2);
    assert.equal(f.moves, 1);
    assert.equal(f.flaps, 0);
    for (let k = 0; k < 10; k++) f.learn(M(1), k % 2 === 0 ? 1 : 2, 0.2 + k * 0.01);
    assert.equal(f.flaps, 1, 'counted once per window');
    assert.equal(f.lastFlap.mac, M(1));
    assert.deepEqual([f.heldBy(1) + f.heldBy(2)], [1], 'one entry, held by one port');
  });

  test('a full table makes room for a port owed it, from the biggest holder, oldest first', () => {
    const f = new Fdb(64); // 48 entries
    for (let k = 0; k < 46; k++) f.learn(M(100 + k), 9, k); // the flooder
    f.learn(M(1), 1, 50);
    f.learn(M(2), 2, 50);
    assert.equal(f.size, 48);
    assert.equal(f.learn(M(3), 3, 60), LEARNED, 'a port attached after the flood is learned');
    assert.equal(f.lookup(M(3), 60), 3);
    assert.equal(f.lookup(M(100), 60), -1, "the flooder's oldest entry went");
    assert.equal(f.lookup(M(1), 60), 1, 'the others keep theirs');
    assert.equal(f.evicted, 1);
    // Ports holding about as many as the learner are not evicted for it.
    const g = new Fdb(16);
    for (let k = 0; k < 12; k++) g.learn(M(k), k, 0);
    assert.equal(g.learn(M(50), 50, 0), LEARN_FULL);
  });

  test('slotsFor: a table of N entries at 3/4 of its slots', () => {
    assert.equal(slotsFor(8192), 16384);
    assert.equal(slotsFor(6144), 8192);
    assert.equal(slotsFor(1), 16);
    assert.equal(slotsFor(65536), 131072);
  });
});
