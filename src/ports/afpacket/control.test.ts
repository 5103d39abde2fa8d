// An afpacket port on a device that is not there: the refusal says how to find the name (and
// its namespace), and does not promise a retry to add-port, which refuses.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { PierError } from '../../errors.ts';
import { realizeAfPacket } from './control.ts';

describe('afpacket: no such device', () => {
  it('in pier\'s namespace: check the name, or pass netns=', () => {
    assert.throws(() => realizeAfPacket({ type: 'afpacket', dev: 'nosuch0' }), (e: unknown) => {
      assert.ok(e instanceof PierError);
      assert.equal(e.code, 'ENODEV');
      assert.equal(e.message, 'no device nosuch0');
      assert.match(e.hint ?? '', /^check the name with: ip link, and pass netns=NS when the device is in another namespace \(a port already added comes back when its device does: pier retries it every 5 s\)$/);
      return true;
    });
  });

  it('in a namespace given: check the name there', () => {
    const netns = `pid:${process.pid}`;
    assert.throws(() => realizeAfPacket({ type: 'afpacket', dev: 'nosuch0', netns }), (e: unknown) => {
      assert.ok(e instanceof PierError);
      assert.equal(e.message, `no device nosuch0 in netns ${netns}`);
      assert.match(e.hint ?? '', new RegExp(`^check the name with: ip -n ${netns} link \\(`));
      return true;
    });
  });
});
