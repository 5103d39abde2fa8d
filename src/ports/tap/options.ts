// A tap port's options: the tap is created inside the container's network namespace with the
// name, MAC, MTU and addresses asked for; offloads=off makes pier segment and checksum for it.
import { z } from 'zod';
import { ifname, ipList, mac, mtu, netns, onOff } from '../fields.ts';

export const tapOptions = z.strictObject({
  type: z.literal('tap'),
  netns: netns.optional(),
  ip: ipList.optional(),
  mac: mac.optional(),
  mtu: mtu.optional(),
  ifname: ifname.optional(),
  offloads: onOff.optional(),
});
export type TapOptions = z.output<typeof tapOptions>;


/** What the dataplane half is built from. */
export interface TapSpec {
  fd: number;
  offloads: boolean;
}
