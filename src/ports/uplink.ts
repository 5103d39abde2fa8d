// What every uplink kind (afpacket, afxdp) refuses about its device before anything is made.
import { PierError } from '../errors.ts';
import type { OtherPort } from './kind.ts';

const UPLINK_TYPES = ['afpacket', 'afxdp'];

/**
 * `dev=` of uplink port `name` (in `netns`, or pier's own): not the loopback device, not a device
 * another uplink already has (one socket kind per device), not the interface of another port of
 * pier (an uplink on it would loop the bridge into itself). Throws PierError.
 */
export function checkUplinkDevice(name: string, dev: string, netns: string | undefined, others: readonly OtherPort[]): void {
  const where = `${dev}${netns ? ` in netns ${netns}` : ''}`;
  if (dev === 'lo') {
    throw new PierError('EINVAL', `dev=lo${netns ? ` in netns ${netns}` : ''} is the loopback device, not a link to other hosts`, 'name the device that leads to the network (ip link), or use a tap port for the host\'s own stack');
  }
  for (const p of others) {
    const po = p.options as { type: string; dev?: string; netns?: string };
    if (po.netns !== netns) continue;
    if (UPLINK_TYPES.includes(po.type) && po.dev === dev) {
      throw new PierError('EEXIST', `port ${p.name} is already an uplink on ${where}`, 'one uplink per device: remove the other port first');
    }
    if (p.ifname === dev) {
      throw new PierError('EEXIST', `${where} is the interface of port ${p.name}`, `an uplink on another port of pier would loop: choose the host's device for ${name}`);
    }
  }
}
