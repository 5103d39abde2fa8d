// The control-plane half of a virtio-user port over /dev/vhost-net, run on this host (which has
// /dev/net/tun but no vhost-net): the tap that vhost-net will be the backend of, made in a
// container with a bounded send buffer. The vhost-net half runs in the VM test.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { destroyTap, realizeVhostTap, tapSndbuf, VHOST_TAP_SNDBUF } from '../src/ports/tap/control.ts';
import { closeFd, getSndbuf, openTap, setSndbuf } from '../src/sys/index.ts';
import { delNetns, makeNetns, must, NEEDS, nsExec, requires } from './helpers.ts';

describe('the tap behind a vhost-net port (root)', requires(NEEDS.tun), () => {
  let ns = '';
  before(() => {
    [ns] = makeNetns(1) as [string];
  });
  after(() => delNetns([ns]));

  it('gets an explicit 1 MiB send buffer instead of the kernel\'s unbounded default', () => {
    const t = realizeVhostTap('vt0', { netns: ns, ip: ['10.83.0.1/24'], ifname: 'eth0', offloads: true });
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

  it('queues=2: one multiqueue tap, opened once per queue pair, every queue with the send buffer', () => {
    const t = realizeVhostTap('vt1', { netns: ns, ip: ['10.83.0.2/24'], ifname: 'mq0', offloads: true }, 2);
    try {
      assert.equal(t.fds.length, 2);
      assert.equal(t.fds[0], t.fd);
      for (const fd of t.fds) assert.equal(getSndbuf(fd), VHOST_TAP_SNDBUF);
      const queues = nsExec(ns, 'ls', ['/sys/class/net/mq0/queues']).stdout.split(/\s+/).filter(Boolean).sort();
      assert.deepEqual(queues, ['rx-0', 'rx-1', 'tx-0', 'tx-1']);
      const link = JSON.parse(must('ip', ['-n', ns, '-d', '-j', 'link', 'show', 'dev', 'mq0']))[0];
      assert.equal(link.num_tx_queues >= 2 && link.num_rx_queues >= 2, true);
      assert.ok(link.linkinfo.info_data.multi_queue, 'tun reports multi_queue');
    } finally {
      destroyTap(t.fds);
    }
    assert.equal(nsExec(ns, 'ip', ['link', 'show', 'dev', 'mq0']).code, 1, 'del-port removes the multiqueue tap');
    // A single-queue tap of the same name cannot be re-attached as a multiqueue one (or back):
    // the kernel refuses, and pier says so instead of half-creating a port. Re-attached only
    // when restoring: otherwise an existing tap is not pier's to take.
    const one = realizeVhostTap('vt2', { netns: ns, ifname: 'sq0', offloads: true }, 1);
    try {
      assert.throws(() => realizeVhostTap('vt2', { netns: ns, ifname: 'sq0', offloads: true }, 2, true), /cannot create tap sq0 in netns .*: .*EINVAL/);
      assert.throws(() => realizeVhostTap('vt2', { netns: ns, ifname: 'sq0', offloads: true }, 2), /interface sq0 already exists in netns .* and pier did not make it/);
    } finally {
      destroyTap(one.fds);
    }
  });
});
