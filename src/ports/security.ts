// Port security from a port's options (docs/design/port-security.md): the keys every kind has
// (port-security=, allowed-addresses=, mac-limit=, storm-limit=), their defaults, and the
// SecurityConfig the dataplane is given.
import type { SecurityConfig } from '../dataplane/security.ts';
import { PierError } from '../errors.ts';
import { splitAllowed } from './fields.ts';
import { aPort, type KindOptions } from './kind.ts';

/** Kinds that carry many stations (a network behind them): limits, no identity by default. */
const UPLINKS = new Set(['afpacket', 'afxdp', 'vxlan']);

/**
 * Learned addresses an unsecured port may hold: a container interface has one or a few; a VM or
 * DPDK application may carry a bridge of its own; an uplink a network's worth.
 */
export const DEFAULT_MAC_LIMIT = 64;
export const DEFAULT_VM_MAC_LIMIT = 256;
export const DEFAULT_UPLINK_MAC_LIMIT = 4096;
const VMS = new Set(['vhost-user', 'vhost-user-client']);
/**
 * Broadcast + multicast + unknown unicast a secured port may make the switch flood, packets/s.
 * A container starting up sends tens (ARP, ND, DHCP, mDNS); see docs/design/port-security.md for
 * the measurement. Unsecured ports get none by default: a one-way flow to a station that never
 * sends is unknown unicast at line rate, and only a port whose identity pier knows can be
 * told it is not a switch of its own.
 */
export const DEFAULT_STORM_LIMIT = 1000;

export interface SecurityOptions {
  'port-security'?: boolean;
  'allowed-addresses'?: string[];
  'mac-limit'?: number;
  'storm-limit'?: number;
}

type WithIdentity = KindOptions & SecurityOptions & { mac?: string; ip?: string[] };

/** The dataplane's SecurityConfig for a port's (prepared) options. Throws PierError when a secured port has no MAC. */
export function securityOf(o: KindOptions): SecurityConfig {
  const r = o as WithIdentity;
  const uplink = UPLINKS.has(o.type);
  const allowed = (r['allowed-addresses'] ?? []).map(splitAllowed);
  const macs = [...new Set([...(r.mac ? [r.mac.toLowerCase()] : []), ...allowed.flatMap((a) => (a.mac ? [a.mac] : []))])];
  const on = r['port-security'] === true;
  if (on && macs.length === 0) {
    throw new PierError('EINVAL', `port-security=on: pier does not know the MAC ${aPort(o.type)} sends from`,
      o.type === 'vhost-user' || o.type === 'vhost-user-client' ? 'add mac=MAC (the guest\'s or application\'s MAC), or a MAC in allowed-addresses=' : 'add the MACs it may send from in allowed-addresses=');
  }
  // A port's own IPs are host addresses (10.0.0.5/24 allows 10.0.0.5, not the subnet).
  const own = (r.ip ?? []).map((a) => ({ ip: a.split('/')[0]! }));
  const extra = allowed.flatMap((a) => (a.ip === undefined ? [] : [a.mac ? { ip: a.ip, mac: a.mac } : { ip: a.ip }]));
  return {
    secured: on ? { macs, own: r.mac !== undefined, addresses: [...own, ...extra] } : null,
    macLimit: r['mac-limit'] ?? (on ? macs.length : uplink ? DEFAULT_UPLINK_MAC_LIMIT : VMS.has(o.type) ? DEFAULT_VM_MAC_LIMIT : DEFAULT_MAC_LIMIT),
    stormLimit: r['storm-limit'] ?? (on ? DEFAULT_STORM_LIMIT : 0),
  };
}

/** Whether a change of these keys changes the port's security. */
export function touchesSecurity(keys: readonly string[]): boolean {
  return keys.some((k) => k === 'port-security' || k === 'allowed-addresses' || k === 'mac-limit' || k === 'storm-limit' || k === 'mac' || k === 'ip');
}
