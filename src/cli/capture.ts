// `pier capture`: asks the daemon for a capture and takes the pcapng stream it answers with. With
// -w it goes to a file or (`-w -`) to stdout for tcpdump or tshark; without, each packet is one
// line of text. Either way the blocks are read as they pass, to say at the end how many packets
// each port gave and how many the capture lost. An interrupt half-closes the connection: the
// daemon stops, sends what is left and the statistics, and closes.
import { createWriteStream, openSync } from 'node:fs';
import { createConnection } from 'node:net';
import type { Writable } from 'node:stream';
import { PierError } from '../daemon/errors.ts';
import { EPB_DATA, EPB_FLAGS, OPT_COMMENT, PcapngBlocks, readOption } from '../daemon/pcapng.ts';
import { connectError } from './client.ts';

export interface CaptureCliOptions {
  ports: string[];
  write?: string | undefined;
  /** As typed: the daemon checks them and says what is wrong. */
  count?: string | undefined;
  direction: string;
  snaplen?: string | undefined;
}

const ETHERTYPES: Record<number, string> = { 0x0800: 'IPv4', 0x0806: 'ARP', 0x86dd: 'IPv6', 0x8100: '802.1Q', 0x88cc: 'LLDP' };
const PROTOCOLS: Record<number, string> = { 1: 'ICMP', 6: 'TCP', 17: 'UDP', 58: 'ICMPv6' };

const mac = (b: Buffer, at: number): string => [...b.subarray(at, at + 6)].map((x) => x.toString(16).padStart(2, '0')).join(':');

/** One line for an Enhanced Packet Block: time, port, direction, addresses, protocol, length, offload. */
export function describePacket(port: string, b: Buffer): string {
  const hi = b.readUInt32LE(12);
  const lo = b.readUInt32LE(16);
  const ns = (BigInt(hi) << 32n) | BigInt(lo);
  const date = new Date(Number(ns / 1_000_000n));
  const time = `${date.toISOString().slice(11, 19)}.${String(ns % 1_000_000_000n).padStart(9, '0')}`;
  const cap = b.readUInt32LE(20);
  const orig = b.readUInt32LE(24);
  const f = b.subarray(EPB_DATA, EPB_DATA + cap);
  const optsAt = EPB_DATA + ((cap + 3) & ~3);
  const flags = readOption(b, optsAt, EPB_FLAGS)?.readUInt32LE(0) ?? 0;
  const dir = (flags & 3) === 1 ? 'in ' : (flags & 3) === 2 ? 'out' : '   ';
  let what = '';
  if (f.length >= 14) {
    let type = f.readUInt16BE(12);
    let l3 = 14;
    let vlan = '';
    if (type === 0x8100 && f.length >= 18) {
      vlan = ` vlan ${f.readUInt16BE(14) & 0xfff}`;
      type = f.readUInt16BE(16);
      l3 = 18;
    }
    what = `${mac(f, 6)} > ${mac(f, 0)}${vlan} ${ETHERTYPES[type] ?? `ethertype 0x${type.toString(16).padStart(4, '0')}`}`;
    if (type === 0x0800 && f.length >= l3 + 20) {
      const proto = f[l3 + 9]!;
      const [sp, dp] = ports(f, l3 + (f[l3]! & 0xf) * 4, proto);
      what += ` ${[...f.subarray(l3 + 12, l3 + 16)].join('.')}${sp} > ${[...f.subarray(l3 + 16, l3 + 20)].join('.')}${dp} ${PROTOCOLS[proto] ?? `proto ${proto}`}`;
    } else if (type === 0x86dd && f.length >= l3 + 40) {
      const next = f[l3 + 6]!;
      const [sp, dp] = ports(f, l3 + 40, next);
      what += ` ${ip6(f, l3 + 8)}${sp} > ${ip6(f, l3 + 24)}${dp} ${PROTOCOLS[next] ?? `next header ${next}`}`;
    }
  }
  const comment = readOption(b, optsAt, OPT_COMMENT)?.toString('utf8');
  return `${time} ${port} ${dir} ${what}, length ${orig}${comment ? ` (${comment})` : ''}`;
}

/** TCP or UDP ports as tcpdump writes them after an address (".5201"); empty for other protocols. */
function ports(f: Buffer, l4: number, proto: number): [string, string] {
  if ((proto !== 6 && proto !== 17) || f.length < l4 + 4) return ['', ''];
  return [`.${f.readUInt16BE(l4)}`, `.${f.readUInt16BE(l4 + 2)}`];
}

function ip6(f: Buffer, at: number): string {
  const w: string[] = [];
  for (let i = 0; i < 16; i += 2) w.push(f.readUInt16BE(at + i).toString(16));
  return w.join(':').replace(/(^|:)0(:0)+(:|$)/, '::');
}

export async function capture(socket: string, o: CaptureCliOptions): Promise<void> {
  // The file first: a path that cannot be written fails before the daemon starts anything.
  let sink: Writable | undefined;
  if (o.write === '-') sink = process.stdout;
  else if (o.write !== undefined) {
    try {
      sink = createWriteStream('', { fd: openSync(o.write, 'w', 0o644) });
    } catch (e) {
      throw new PierError('EIO', `cannot write ${o.write}: ${(e as NodeJS.ErrnoException).code}`, 'give -w a path in a directory you can write, or - for stdout');
    }
  }
  const args = [...o.ports, `direction=${o.direction}`];
  if (o.snaplen !== undefined) args.push(`snaplen=${o.snaplen}`);
  if (o.count !== undefined) args.push(`count=${o.count}`);

  const blocks = new PcapngBlocks(sink ? undefined : (i, b) => process.stdout.write(describePacket(i.name, b) + '\n'));
  const s = createConnection(socket);
  await new Promise<void>((resolve, reject) => {
    let answered = false;
    let head = Buffer.alloc(0);
    let stopping = false;
    const stop = (): void => {
      if (stopping) process.exit(130); // a second interrupt: do not wait for the daemon
      stopping = true;
      s.end(); // the daemon sends the rest and the statistics, then closes
    };
    process.on('SIGINT', stop);
    process.on('SIGTERM', stop);
    // A reader of our stdout that goes away (tcpdump -c) ends the capture like an interrupt.
    process.stdout.on('error', () => s.destroy());
    s.once('connect', () => s.write(JSON.stringify({ cmd: 'capture', args }) + '\n'));
    s.on('data', (d: Buffer) => {
      if (!answered) {
        head = Buffer.concat([head, d]);
        const nl = head.indexOf(0x0a);
        if (nl < 0) return;
        answered = true;
        const r = JSON.parse(head.subarray(0, nl).toString('utf8')) as { ok: true; result: unknown } | { ok: false; error: { code: string; message: string; hint?: string } };
        if (!r.ok) {
          s.destroy();
          reject(new PierError(r.error.code, r.error.message, r.error.hint));
          return;
        }
        d = head.subarray(nl + 1);
        if (d.length === 0) return;
      }
      try {
        blocks.push(d);
      } catch (e) {
        s.destroy();
        reject(e instanceof Error ? e : new Error(String(e)));
        return;
      }
      if (sink && !sink.write(d)) {
        s.pause(); // the file or pipe is slower than the capture: the daemon's ring absorbs it, then loses records
        sink.once('drain', () => s.resume());
      }
    });
    s.once('error', (e: NodeJS.ErrnoException) => {
      if (!answered) reject(connectError(socket, e));
    });
    s.once('close', () => {
      if (!answered) reject(new PierError('EIO', `the pier daemon at ${socket} closed the connection without answering`, 'look at the daemon\'s log'));
      else resolve();
    });
  });
  if (sink && sink !== process.stdout) await new Promise<void>((r) => sink.end(r));
  const lines = blocks.ifaces.map((i) => `${i.name}: ${i.packets} packet${i.packets === 1 ? '' : 's'} captured` +
    (i.dropped ? `, ${i.dropped} lost (the capture fell behind the traffic; forwarding did not)` : ''));
  process.stderr.write(`${lines.join('\n')}\n`);
}
