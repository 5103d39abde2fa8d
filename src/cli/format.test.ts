import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { COUNTER_NAMES } from '../dataplane/counters.ts';
import { formatShow, formatStats } from './format.ts';

const zero = Object.fromEntries(COUNTER_NAMES.map((n) => [n, 0])) as Record<string, number>;

describe('pier stats text', () => {
  test('a virtio-user port: its receive ring apart from the drops, and the kernel tap with its send buffer', () => {
    const text = formatStats([{
      port: 'c1', bridge: 'br0', state: 'up',
      counters: { ...zero, rx_packets: 10, tx_packets: 7, rx_buffers_posted: 1034, rx_ring_empty: 3, rx_post_short: 1, tx_dropped_full: 2 },
      kernel: { ifname: 'eth0', rx_packets: 7, tx_packets: 10, rx_dropped: 0, tx_dropped: 5, sndbuf: 1048576 },
    }]);
    assert.match(text, /rx ring: rx_buffers_posted: 1034 {2}rx_ring_empty: 3 {2}rx_post_short: 1/);
    assert.match(text, /^ {2}tx_dropped_full: 2$/m, 'ring counters are not listed as drops');
    assert.match(text, /kernel eth0: rx 7 tx 10 rx_dropped 0 tx_dropped 5 sndbuf 1048576/);
  });

  test('a tap port: no ring line, no drops', () => {
    const text = formatStats([{ port: 't', bridge: 'br0', state: 'up', counters: { ...zero }, kernel: { ifname: 't', rx_packets: 0, tx_packets: 0, rx_dropped: 0, tx_dropped: 0 } }]);
    assert.doesNotMatch(text, /rx ring/);
    assert.match(text, /no drops/);
    assert.match(text, /kernel t: rx 0 tx 0 rx_dropped 0 tx_dropped 0$/m);
  });
});

describe('pier show text', () => {
  test('the options line shows booleans as typed, on or off, and a trunk\'s VLANs as ranges', () => {
    const text = formatShow({
      port: {
        name: 'up0', bridge: 'br0', state: 'up',
        options: { type: 'afpacket', dev: 'audv0', offloads: true, 'port-security': false, 'allowed-addresses': ['02:00:00:00:00:09'], trunks: [10, 11, 12, 30] },
      },
    });
    assert.equal(text.split('\n')[1], '    type=afpacket dev=audv0 offloads=on port-security=off allowed-addresses=02:00:00:00:00:09 trunks=10-12,30');
  });

  test('an up port whose device has no link says so on its state line; one with link does not', () => {
    const show = (operstate: string): string => formatShow({
      port: { name: 'up0', bridge: 'br0', state: 'up', options: { type: 'afpacket', dev: 'wire0' }, kernel: { ifname: 'wire0', operstate } },
    }).split('\n')[2]!;
    assert.equal(show('LOWERLAYERDOWN'), '    state: up, but wire0 is LOWERLAYERDOWN');
    assert.equal(show('DOWN'), '    state: up, but wire0 is DOWN');
    assert.equal(show('UP'), '    state: up');
    assert.equal(show('UNKNOWN'), '    state: up', 'a tap without carrier sense reports UNKNOWN');
  });

  test('a virtio-user port with two queue pairs lists each pair', () => {
    const text = formatShow({
      port: {
        name: 'up', bridge: 'br0', options: { type: 'virtio-user', path: '/run/x.sock' }, state: 'up',
        peer: {
          backend: 'vhost-user', mode: 'client', path: '/run/x.sock', connected: true, link: 'up',
          features: { negotiated: ['MQ'], notTaken: [] }, queueSize: 1024, queuePairs: 2, backendQueuePairs: 8, rxPostLimit: 512, rxPosted: 1024, txInFlight: 0,
          pairs: [{ pair: 0, rxPosted: 512, txInFlight: 0, rxPackets: 10, txPackets: 11 }, { pair: 1, rxPosted: 512, txInFlight: 0, rxPackets: 12, txPackets: 13 }],
          rings: { rx_buffers_posted: 534, rx_ring_empty: 0, rx_post_short: 0, tx_dropped_full: 0 }, connects: 1, disconnects: 0,
        },
      },
    });
    assert.match(text, /virtio driver over vhost-user client on \/run\/x\.sock: backend connected, link up, queue size 1024, queue pairs 2 \(backend has 8\)/);
    assert.match(text, /at most 512 buffers posted per receive ring \(of 1024\): a port posts at most an eighth of the packet pool; raise pier daemon --pool/);
    assert.match(text, /pair 0: rx 10 packets \(512 posted\) {2}tx 11 packets \(0 in flight\)/);
    assert.match(text, /pair 1: rx 12 packets \(512 posted\) {2}tx 13 packets \(0 in flight\)/);
  });

  test('a virtio-user port shows its backend, features and rings (not the vhost-user device view)', () => {
    const text = formatShow({
      port: {
        name: 'c1', bridge: 'br0', options: { type: 'virtio-user', path: '/dev/vhost-net' }, state: 'up',
        kernel: { ifname: 'eth0', rx_packets: 5, tx_packets: 6, rx_dropped: 1, tx_dropped: 2, sndbuf: 1048576 },
        peer: {
          backend: 'vhost-kernel', mode: 'client', path: '/dev/vhost-net', connected: false, link: 'up',
          features: { negotiated: ['MRG_RXBUF', 'VERSION_1'], notTaken: [] }, queueSize: 256, rxPosted: 256, txInFlight: 4,
          rings: { rx_buffers_posted: 300, rx_ring_empty: 2, rx_post_short: 0, tx_dropped_full: 1 }, connects: 1, disconnects: 0,
        },
      },
    });
    assert.match(text, /virtio driver over vhost-net \(\/dev\/vhost-net\), link up, queue size 256/);
    assert.match(text, /features: MRG_RXBUF VERSION_1/);
    assert.match(text, /receive ring: 256 buffers posted now, 300 in all; ran empty 2 times; refills left short 0 times/);
    assert.match(text, /transmit ring: 4 in flight; 1 dropped on a full ring/);
    assert.match(text, /kernel eth0: rx 5 tx 6 rx_dropped 1 tx_dropped 2 sndbuf 1048576/);
  });
});
