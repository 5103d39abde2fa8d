// An AF_XDP uplink's options: the device (in `netns`, default pier's own), how many of its rx
// queues get a socket, the XDP mode and zero-copy (auto tries the fast one first).
import { z } from 'zod';
import { ifname, intIn, netns } from '../fields.ts';

export const afxdpOptions = z.strictObject({
  type: z.literal('afxdp'),
  dev: ifname,
  netns: netns.optional(),
  queues: intIn(1, 64, 'rx queues of the device, one AF_XDP socket each').optional(),
  mode: z.enum(['auto', 'native', 'generic']).optional(),
  'zero-copy': z.enum(['auto', 'on', 'off']).optional(),
});
export type AfXdpOptions = z.output<typeof afxdpOptions>;

/** What the dataplane half is built from. */
export interface AfXdpSpec {
  dev: string;
  ifindex: number;
  /** The device's namespace (undefined: pier's own): the sockets are made there. */
  netnsPath: string | undefined;
  /** The XSKMAP the attached program redirects into (the control half's fd; the worker fills it). */
  mapFd: number;
  queues: number;
  zeroCopy: 'auto' | 'on' | 'off';
  /** How the program runs on the device. */
  mode: 'native' | 'generic';
  /** Coalesce received TCP segments of a flow into TSO super-frames (src/dataplane/gro.ts). */
  gro: boolean;
}
