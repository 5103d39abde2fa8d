// The control-plane half of a virtio-user port over /dev/vhost-net, run on this host (which has
// /dev/net/tun but no vhost-net): the tap that vhost-net will be the backend of, made in a
// container with a bounded send buffer. The vhost-net half runs in the VM test.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { destroyTap, realizeVhostTap, tapSndbuf, VHOST_TAP_SNDBUF } from '../src/daemon/tap-control.ts';
import { closeFd, getSndbuf, openTap, setSndbuf } from '../src/sys/index.ts';
import { delNetns, makeNetns, must } from './helpers.ts';

describe('the tap behind a vhost-net port (root)', () => {
  let ns = '';
  before(() => {
    [ns] = makeNetns(1) as [string];
  });
  after(() => delNetns([ns]));

  it('gets an explicit 1 MiB send buffer instead of the kernel\'s unbounded default', () => {
    const t = realizeVhostTap('vt0', { type: 'tap', netns: ns, ip: ['10.83.0.1/24'], ifname: 'eth0', offloads: true });
    try {
      assert.equal(VHOST_TAP_SNDBUF, 1048576);
      assert.equal(getSndbuf(t.fd), VHOST_TAP_SNDBUF);
      assert.equal(tapSndbuf(t.fd), VHOST_TAP_SNDBUF);
      const link = JSON.parse(must('ip', ['-n', ns, '-j', 'link', 'show', 'dev', 'eth0']))[0];
      assert.equal(link.ifname, 'eth0');
      assert.throws(() => setSndbuf(t.fd, 0), /not in 1\.\.INT_MAX/);
    } finally {
      destroyTap(t.fd);
    }
    // The kernel's default, for comparison: a tap port's tap, never given TUNSETSNDBUF.
    const plain = openTap({ ifname: 'plain0', netnsPath: `/var/run/netns/${ns}`, offloads: 0 });
    try {
      assert.equal(getSndbuf(plain.fd), 0x7fffffff);
    } finally {
      closeFd(plain.fd);
    }
    assert.equal(tapSndbuf(-1), undefined);
  });
});
