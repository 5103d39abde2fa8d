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
