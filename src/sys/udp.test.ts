import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { addressOf, close } from './libc.ts';
import { boundPort, ipBytes, MmsgBatch, recvmmsg, sendmmsg, sockaddr, sockaddrText, udpSocket, MSG_DONTWAIT, SIZEOF_SOCKADDR_IN, SIZEOF_SOCKADDR_IN6 } from './udp.ts';

describe('udp: addresses', () => {
  test('sockaddr_in and sockaddr_in6, and back to text', () => {
    const a = sockaddr(4, '192.0.2.7', 4789);
    assert.equal(a.length, SIZEOF_SOCKADDR_IN);
    assert.deepEqual([...a.slice(0, 8)], [2, 0, 0x12, 0xb5, 192, 0, 2, 7]);
    assert.equal(sockaddrText(a, 0), '192.0.2.7');
    const b = sockaddr(6, '2001:db8::1:2', 4789);
    assert.equal(b.length, SIZEOF_SOCKADDR_IN6);
    assert.equal(b[0], 10);
    assert.equal(sockaddrText(b, 0), '2001:db8::1:2');
    assert.deepEqual([...ipBytes('::ffff:192.0.2.1')], [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 192, 0, 2, 1]);
    assert.deepEqual([...ipBytes('::')], new Array(16).fill(0));
  });
});

describe('udp: sendmmsg and recvmmsg over loopback', () => {
  test('two datagrams of two iovecs each, one with UDP_SEGMENT cut into three', () => {
    const rx = udpSocket({ netnsPath: undefined, family: 4, local: '127.0.0.1', port: 0 });
    const tx = udpSocket({ netnsPath: undefined, family: 4, local: '127.0.0.1', port: 0 });
    try {
      const dst = sockaddr(4, '127.0.0.1', boundPort(rx));
      const head = new Uint8Array(new ArrayBuffer(2)).fill(0xaa);
      const body = new Uint8Array(new ArrayBuffer(300)).map((_, i) => i & 0xff);
      const out = new MmsgBatch(4, 16);
      // message 0: head + 10 bytes; message 1: three segments of head + 100 bytes (gso_size 102)
      out.setIov(0, addressOf(head), 2);
      out.setIov(1, addressOf(body), 10);
      for (let k = 0; k < 3; k++) {
        out.setIov(2 + 2 * k, addressOf(head), 2);
        out.setIov(3 + 2 * k, addressOf(body) + 100 * k, 100);
      }
      out.setName(0, dst);
      out.setName(1, dst);
      out.setMsg(0, 0, 2, dst.length);
      out.setMsg(1, 2, 6, dst.length, 102);
      assert.equal(sendmmsg(tx, out.addr, 2, MSG_DONTWAIT), 2);
      const buf = new Uint8Array(new ArrayBuffer(4 * 2048));
      const inb = new MmsgBatch(4, 4);
      for (let k = 0; k < 4; k++) {
        inb.setIov(k, addressOf(buf) + 2048 * k, 2048);
        inb.setMsg(k, k, 1, 28);
      }
      const n = recvmmsg(rx, inb.addr, 4, MSG_DONTWAIT, 0);
      assert.equal(n, 4);
      assert.deepEqual([0, 1, 2, 3].map((k) => inb.msgLen(k)), [12, 102, 102, 102]);
      assert.deepEqual([...buf.slice(2048 * 2, 2048 * 2 + 4)], [0xaa, 0xaa, 100, 101]);
      assert.equal(sockaddrText(inb.bytes, inb.nameOffset(0)), '127.0.0.1');
    } finally {
      close(rx);
      close(tx);
    }
  });
});

