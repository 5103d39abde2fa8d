// The network configuration on stdin, read and checked by hand. zod would say it in a third of
// the lines, but importing it costs ~60 ms (measured: node -e "import('zod')" against an empty
// import), more than the whole ADD of the reference bridge plugin; pier-cni runs once per
// container per verb, so it loads node: builtins only. Each refusal names the key and the fix.
import { dirname } from 'node:path';
import { CniError, CODE } from './errors.cts';
import { isSupported, readResult, SUPPORTED, type Result } from './versions.cts';

export type PortType = 'tap' | 'virtio-user' | 'vhost-user';
const PORT_TYPES: readonly PortType[] = ['tap', 'virtio-user', 'vhost-user'];

/**
 * The bridge when the config names none: `cni0`, as the reference bridge plugin, so containers a
 * runtime starts never land on a bridge someone made by hand (`pier add-br br0`) unless named.
 */
export const DEFAULT_BRIDGE = 'cni0';
export const DEFAULT_SOCKET_DIR = '/run/pier/vhost-user';
/**
 * pier's default control socket, src/daemon/defaults.ts DEFAULT_SOCKET (config.test.ts checks they
 * agree): that module is ESM, which a CommonJS module cannot require on Node 20 (see main.cts).
 */
export const DEFAULT_SOCKET = '/run/pier/pier.sock';

/** The daemon's run directory: where its socket is, and pier-cni's version cache and tombstones. */
export function runDir(socket: string): string {
  return dirname(socket);
}

/** The same bounds as the port kinds' schemas (src/ports/*\/options.ts, not imported: zod). */
const MTU_MIN = 68;
const MTU_MAX = 65521;
const QUEUES_MAX = 16;
const QSIZE_MIN = 64;
const QSIZE_MAX = 32768;

/** Names of networks and containers, as the spec and libcni's ValidateNetworkName say. */
export const CNI_NAME_RE = /^[a-zA-Z0-9][a-zA-Z0-9_.-]*$/;
/** pier's bridge names (src/daemon/daemon.ts NAME_RE). */
const BRIDGE_RE = /^[A-Za-z0-9_.][A-Za-z0-9_.:-]*$/;
const MAC_RE = /^([0-9a-f]{2}:){5}[0-9a-f]{2}$/i;

export interface PortOptions { queues?: number; offloads?: boolean; 'queue-size'?: number }

export interface NetConf {
  /** The object as read: what a delegated plugin is given (with its cniVersion set). */
  raw: Record<string, unknown>;
  cniVersion: string;
  name: string;
  bridge: string;
  socket: string;
  portType: PortType;
  mtu?: number;
  mac?: string;
  isGateway: boolean;
  ipMasq: boolean;
  /**
   * Port security (docs/design/port-security.md): on unless the conflist says `"portSecurity":
   * false`; a vhost-user port only with a `mac` (pier does not make the application's interface).
   */
  portSecurity: boolean;
  options: PortOptions;
  socketDir?: string;
  /** Multus's `runtimeConfig.CNIDeviceInfoFile`: where a vhost-user port's socket is told to the pod. */
  deviceInfoFile?: string;
  /** The IPAM plugin's name; none when the config has no `ipam` (or an empty one). */
  ipamType?: string;
  prevResult?: Result;
  /**
   * GC's `cni.dev/valid-attachments` (or `cni.dev/attachments`, the name an earlier text of the
   * spec gave it, which libcni passes as well); undefined when the config has neither.
   */
  validAttachments?: Array<{ containerId: string; ifname: string }>;
}

/** Keys pier-cni reads or the spec defines; one differing only in case is a typo worth refusing. */
const KNOWN = ['cniVersion', 'cniVersions', 'name', 'type', 'bridge', 'socket', 'portType', 'mtu', 'mac', 'isGateway', 'ipMasq', 'portSecurity',
  'queues', 'offloads', 'queue-size', 'socketDir', 'ipam', 'dns', 'prevResult', 'runtimeConfig', 'capabilities', 'args',
  'cni.dev/valid-attachments', 'cni.dev/attachments'];

const bad = (key: string, problem: string, fix: string): CniError => new CniError(CODE.badConfig, `invalid pier-cni config: ${key} ${problem}`, fix);
const isObj = (x: unknown): x is Record<string, unknown> => typeof x === 'object' && x !== null && !Array.isArray(x);

/** Only the version, for the error JSON of a config that fails later checks (or before them). */
export function peekVersion(text: string): string | undefined {
  const m = /"cniVersion"\s*:\s*"([^"]*)"/.exec(text);
  return m && isSupported(m[1]!) ? m[1] : undefined;
}

export function parseConfig(text: string): NetConf {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    throw new CniError(CODE.decode, 'the network configuration on stdin is not JSON', `${(e as Error).message}; the runtime passes one JSON object on stdin`);
  }
  if (!isObj(raw)) throw new CniError(CODE.decode, 'the network configuration on stdin is not a JSON object', 'the runtime passes one JSON object (the plugin\'s part of the conflist) on stdin');

  const name = raw.name;
  if (typeof name !== 'string' || !CNI_NAME_RE.test(name)) {
    throw bad('name', name === undefined ? 'is missing' : `${JSON.stringify(name)} is not a network name`,
      'give the network a "name" of letters, digits, _ . - starting with a letter or digit');
  }
  const v = raw.cniVersion;
  if (typeof v !== 'string' || !isSupported(v)) {
    throw new CniError(CODE.incompatibleVersion, 'incompatible CNI versions',
      `the config's cniVersion is ${v === undefined ? 'missing' : JSON.stringify(v)}; pier-cni supports ${SUPPORTED.join(', ')}`);
  }
  for (const k of Object.keys(raw)) {
    const known = KNOWN.find((n) => n !== k && n.toLowerCase() === k.toLowerCase());
    if (known) throw bad(k, 'is not a key pier-cni knows', `spell it "${known}"`);
  }

  const str = (k: string, fix: string): string | undefined => {
    const x = raw[k];
    if (x === undefined) return undefined;
    if (typeof x !== 'string' || x === '') throw bad(k, `${JSON.stringify(x)} is not a non-empty string`, fix);
    return x;
  };
  const bool = (k: string): boolean => {
    const x = raw[k];
    if (x === undefined) return false;
    if (typeof x !== 'boolean') throw bad(k, `${JSON.stringify(x)} is not a boolean`, `write ${k} as true or false (without quotes)`);
    return x;
  };
  const int = (k: string, lo: number, hi: number, what: string, pow2 = false): number | undefined => {
    const x = raw[k];
    if (x === undefined) return undefined;
    if (typeof x !== 'number' || !Number.isInteger(x) || x < lo || x > hi || (pow2 && (x & (x - 1)) !== 0)) {
      throw bad(k, `${JSON.stringify(x)} is out of range`, `${k} is ${pow2 ? 'a power of two ' : 'an integer '}in ${lo}..${hi} (${what}), written as a number`);
    }
    return x;
  };
  const absPath = (k: string, max: number): string | undefined => {
    const p = str(k, `set ${k} to an absolute path`);
    if (p !== undefined && (!p.startsWith('/') || Buffer.byteLength(p) > max)) throw bad(k, `${JSON.stringify(p)} is not an absolute path of at most ${max} bytes`, `set ${k} to a shorter absolute path`);
    return p;
  };

  const bridge = str('bridge', `name a pier bridge, such as "${DEFAULT_BRIDGE}" (it is created if missing)`) ?? DEFAULT_BRIDGE;
  if (!BRIDGE_RE.test(bridge) || bridge.length > 64) throw bad('bridge', `${JSON.stringify(bridge)} is not a pier bridge name`, 'use letters, digits, _ . : - (not starting with a dash), at most 64');

  const portType = (str('portType', 'use "tap" (the default), "virtio-user" or "vhost-user"') ?? 'tap') as PortType;
  if (!PORT_TYPES.includes(portType)) throw bad('portType', `${JSON.stringify(portType)} is not a port type`, 'use "tap" (the default), "virtio-user" or "vhost-user"');

  let mac = str('mac', 'write a MAC address such as "02:00:00:00:00:01"');
  const rc = raw.runtimeConfig;
  if (rc !== undefined && !isObj(rc)) throw bad('runtimeConfig', 'is not an object', 'the runtime fills runtimeConfig with the capabilities it passes; leave it out of the config');
  // The `mac` capability (CONVENTIONS.md) is the runtime's choice for this container: it wins.
  if (isObj(rc) && rc.mac !== undefined) {
    if (typeof rc.mac !== 'string') throw bad('runtimeConfig.mac', 'is not a string', 'pass the MAC as a string such as "02:00:00:00:00:01"');
    mac = rc.mac;
  }
  let deviceInfoFile: string | undefined;
  if (isObj(rc) && rc.CNIDeviceInfoFile !== undefined) {
    if (typeof rc.CNIDeviceInfoFile !== 'string' || !rc.CNIDeviceInfoFile.startsWith('/')) throw bad('runtimeConfig.CNIDeviceInfoFile', 'is not an absolute path', 'Multus passes the path of the device-info file; leave it to the runtime');
    deviceInfoFile = rc.CNIDeviceInfoFile;
  }
  if (mac !== undefined) {
    if (!MAC_RE.test(mac)) throw bad('mac', `${JSON.stringify(mac)} is not a MAC address`, 'write six hex pairs such as "02:00:00:00:00:01"');
    if (parseInt(mac.slice(0, 2), 16) & 1) throw bad('mac', `${mac} is a multicast address`, 'the first octet must be even (02:... is a safe local choice)');
    mac = mac.toLowerCase();
  }

  const options: PortOptions = {};
  const queues = int('queues', 1, QUEUES_MAX, 'queue pairs');
  if (queues !== undefined) options.queues = queues;
  const qsize = int('queue-size', QSIZE_MIN, QSIZE_MAX, 'ring size', true);
  if (qsize !== undefined) options['queue-size'] = qsize;
  const off = raw.offloads;
  if (off !== undefined) {
    if (typeof off === 'boolean') options.offloads = off;
    else if (off === 'on' || off === 'off') options.offloads = off === 'on';
    else throw bad('offloads', `${JSON.stringify(off)} is not on or off`, 'write offloads as true or false');
  }

  let ipamType: string | undefined;
  const ipam = raw.ipam;
  if (ipam !== undefined) {
    if (!isObj(ipam)) throw bad('ipam', 'is not an object', 'write ipam as an object with a "type", such as {"type": "host-local", "ranges": [[{"subnet": "10.88.0.0/16"}]]}');
    if (ipam.type !== undefined || Object.keys(ipam).length > 0) {
      if (typeof ipam.type !== 'string' || ipam.type === '' || ipam.type.includes('/') || ipam.type === '.' || ipam.type === '..') {
        throw bad('ipam.type', ipam.type === undefined ? 'is missing' : `${JSON.stringify(ipam.type)} is not a plugin name`, 'name the IPAM plugin\'s executable in CNI_PATH, such as "host-local"');
      }
      ipamType = ipam.type;
    }
  }

  let prevResult: Result | undefined;
  if (raw.prevResult !== undefined && raw.prevResult !== null) {
    try {
      prevResult = readResult(raw.prevResult);
    } catch (e) {
      throw bad('prevResult', (e as Error).message, 'the runtime passes the previous plugin\'s result there; check the plugins before pier-cni in the conflist');
    }
  }

  let validAttachments: NetConf['validAttachments'];
  const vaKey = raw['cni.dev/valid-attachments'] !== undefined ? 'cni.dev/valid-attachments' : 'cni.dev/attachments';
  const va = raw[vaKey];
  if (va !== undefined) {
    if (!Array.isArray(va)) throw bad(vaKey, 'is not a list', 'the runtime passes a list of {containerID, ifname}');
    validAttachments = [];
    for (const [n, a] of va.entries()) {
      if (!isObj(a) || typeof a.containerID !== 'string' || typeof a.ifname !== 'string') throw bad(`${vaKey}[${n}]`, 'is not {containerID, ifname}', 'the runtime passes a list of {containerID, ifname} strings');
      validAttachments.push({ containerId: a.containerID, ifname: a.ifname });
    }
  }

  const conf: NetConf = {
    raw, cniVersion: v, name, bridge, portType, options, prevResult, validAttachments,
    socket: absPath('socket', 107) ?? DEFAULT_SOCKET,
    isGateway: bool('isGateway'),
    ipMasq: bool('ipMasq'),
    portSecurity: raw.portSecurity === undefined ? portType !== 'vhost-user' || mac !== undefined : bool('portSecurity'),
  };
  if (conf.portSecurity && portType === 'vhost-user' && mac === undefined) {
    throw bad('portSecurity', 'is true for a vhost-user port without a mac', 'pier cannot know the MAC a DPDK application sends from: give "mac" (or runtimeConfig.mac), or set "portSecurity": false');
  }
  const mtu = int('mtu', MTU_MIN, MTU_MAX, 'the interface\'s MTU');
  if (mtu !== undefined) conf.mtu = mtu;
  if (mac !== undefined) conf.mac = mac;
  // The socket path is socketDir/<12>-<ifname>.sock, at most 107 bytes: 80 leaves room.
  const socketDir = absPath('socketDir', 80);
  if (socketDir !== undefined) conf.socketDir = socketDir;
  if (ipamType !== undefined) conf.ipamType = ipamType;
  if (deviceInfoFile !== undefined) conf.deviceInfoFile = deviceInfoFile;
  return conf;
}
