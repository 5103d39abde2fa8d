// A vxlan port whose local= the namespace does not have: refused as such (not as a missing
// route), whichever socket's bind finds it. In pier's own namespace, with an address of
// TEST-NET-2 that no interface here has.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { PierError } from '../../errors.ts';
import { vxlanControl } from './control.ts';
import type { VxlanOptions } from './options.ts';

const LOCAL = '198.51.100.254';
// With net.ipv4.ip_nonlocal_bind=1 the kernel lets any address be bound.
const nonlocalBind = readFileSync('/proc/sys/net/ipv4/ip_nonlocal_bind', 'utf8').trim() !== '0';

function refused(o: VxlanOptions): void {
  assert.throws(() => vxlanControl.realize('vx0', o).destroy(), (e: unknown) => {
    assert.ok(e instanceof PierError);
    assert.equal(e.message, `local=${LOCAL} is not an address of pier's network namespace`);
    assert.match(e.hint ?? '', new RegExp(`^add it there first \\(ip addr add ${LOCAL.replaceAll('.', '\\.')}/PREFIX dev DEV\\), or leave local= out`));
    return true;
  });
}

describe('vxlan local= that is not an address here', { skip: nonlocalBind && 'net.ipv4.ip_nonlocal_bind is on' }, () => {
  it('while reading the route MTU (no mtu=)', () => {
    refused({ type: 'vxlan', vni: 42, remote: ['127.0.0.1'], local: LOCAL });
  });

  // The receiving socket forces its buffer size first (SO_RCVBUFFORCE), which needs root.
  it('while binding the receiving socket (mtu= given)', { skip: process.getuid?.() !== 0 && 'needs root (SO_RCVBUFFORCE)' }, () => {
    refused({ type: 'vxlan', vni: 42, remote: ['127.0.0.1'], local: LOCAL, mtu: 1500 });
  });
});

describe('vxlan set-port', () => {
  // Realizing opens the receiving socket with SO_RCVBUFFORCE, which needs root.
  it('rco= alone does not look the underlay MTU up again (it needs no route); a new remote does', { skip: process.getuid?.() !== 0 && 'needs root (SO_RCVBUFFORCE)' }, () => {
    const prev: VxlanOptions = { type: 'vxlan', vni: 4242, remote: ['127.0.0.1'], local: '127.0.0.1', dstport: 47891 };
    const real = vxlanControl.realize('vx0', prev);
    try {
      // Stand-in for a value only a lookup could change: kept when only rco changes.
      real.spec = { ...real.spec, underlayMtu: 1234, mtuFrom: 'the route to 127.0.0.1 (kept)' };
      const next: VxlanOptions = { ...prev, rco: true };
      const spec = vxlanControl.update('vx0', real, prev, next);
      assert.ok(spec);
      assert.equal(spec.rco, true);
      assert.equal(spec.underlayMtu, 1234);
      // Another remote list: looked up again (lo's MTU).
      const moved = vxlanControl.update('vx0', real, next, { ...next, remote: ['127.0.0.1', '127.0.0.2'] });
      assert.ok(moved);
      assert.notEqual(moved.underlayMtu, 1234);
      assert.equal(moved.rco, true);
    } finally {
      real.destroy();
    }
  });
});
