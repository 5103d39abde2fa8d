// Packet capture, the daemon's half (docs/design/observability.md, section 1): a capture ring per
// `pier capture`, drained every 10 ms into pcapng blocks on the client's connection. The client
// is expected to be slow: while more than HIGH_WATER bytes wait on its socket nothing is drained,
// the ring fills and the dataplane counts lost records; forwarding never waits for a reader.
import type { Socket } from 'node:net';
import { CAPTURE_IN, CAPTURE_MAX_PORTS, CAPTURE_MAX_SNAPLEN, CAPTURE_OUT, captureControl, captureStats, CaptureReader, REC_DATA, REC_VNET } from '../dataplane/capture.ts';
import { mapShared, unmap, type Mapping } from '../sys/index.ts';
import { StreamReply } from './control.ts';
import type { Dataplane } from './dataplane.ts';
import { PierError } from './errors.ts';
import { describeVnetHeader, EPB_INBOUND, EPB_OUTBOUND, enhancedPacket, interfaceDescription, interfaceStatistics, sectionHeader, timestamp } from './pcapng.ts';

/** Captures running at once: each holds an 8 MiB ring and a connection. */
export const MAX_CAPTURES = 4;
const RING_BYTES = 8 << 20;
const DRAIN_MS = 10;
/** Bytes queued on a client's socket beyond which the ring is left to fill. */
const HIGH_WATER = 4 << 20;
/** Most bytes of pcapng one drain turn produces (the event loop has other clients). */
const DRAIN_BYTES = 4 << 20;

export interface CaptureOptions {
  ports: string[];
  direction: Direction;
  snaplen: number;
  /** Stop after this many packets; 0: until the client stops. */
  count: number;
}

const DIRECTIONS = { in: CAPTURE_IN, out: CAPTURE_OUT, both: CAPTURE_IN | CAPTURE_OUT } as const;
type Direction = keyof typeof DIRECTIONS;

/** The capture request's arguments: port names, then `direction=`, `snaplen=`, `count=` (as the CLI sends them). */
export function parseCaptureArgs(args: readonly string[]): CaptureOptions {
  const o: CaptureOptions = { ports: [], direction: 'both', snaplen: CAPTURE_MAX_SNAPLEN, count: 0 };
  for (const a of args) {
    const eq = a.indexOf('=');
    if (eq < 0) {
      if (o.ports.includes(a)) throw new PierError('EINVAL', `port ${a} is named twice`, 'name each port once');
      o.ports.push(a);
      continue;
    }
    const key = a.slice(0, eq);
    const v = a.slice(eq + 1);
    if (key === 'direction') {
      if (!Object.hasOwn(DIRECTIONS, v)) throw new PierError('EINVAL', `--direction ${v} is not a direction`, 'use in (what the port receives), out (what it sends) or both');
      o.direction = v as Direction;
    } else if (key === 'snaplen') {
      const n = Number(v);
      if (!Number.isInteger(n) || n < 1 || n > CAPTURE_MAX_SNAPLEN) throw new PierError('EINVAL', `--snaplen ${v} is out of range`, `use 1..${CAPTURE_MAX_SNAPLEN} bytes of each packet`);
      o.snaplen = n;
    } else if (key === 'count') {
      const n = Number(v);
      if (!Number.isInteger(n) || n < 1 || n > Number.MAX_SAFE_INTEGER) throw new PierError('EINVAL', `-c ${v} is not a count of packets`, 'use a whole number of packets, at least 1');
      o.count = n;
    } else {
      throw new PierError('EINVAL', `unknown capture option ${key}`, 'the options are direction=, snaplen= and count=');
    }
  }
  if (o.ports.length === 0) throw new PierError('EINVAL', 'no port to capture', 'name at least one port: pier capture PORT [PORT...]');
  if (o.ports.length > CAPTURE_MAX_PORTS) throw new PierError('EINVAL', `${o.ports.length} ports in one capture; at most ${CAPTURE_MAX_PORTS}`, 'capture fewer ports');
  return o;
}

export interface CapturedPort { name: string; index: number; type: string; bridge: string }

interface Log {
  info(o: object, msg: string): void;
  warn(o: object, msg: string): void;
}

/** Every running capture of a daemon. */
export class Captures {
  private readonly running = new Set<CaptureSession>();
  private nextId = 1;

  /** `dataplane(ports)`: the thread that runs the ports (or a PierError when they are on several). */
  constructor(private readonly dataplane: (ports: CapturedPort[]) => Dataplane, private readonly log: Log, private readonly application: string) {}

  /** Start a capture of `ports` (each known to run or to be wanted); the reply streams it. */
  async start(ports: CapturedPort[], o: CaptureOptions): Promise<StreamReply> {
    if (this.running.size >= MAX_CAPTURES) {
      throw new PierError('EBUSY', `${MAX_CAPTURES} captures are running, the most pier runs at once`, 'stop one (interrupt its pier capture) and try again');
    }
    const s = new CaptureSession(this.nextId++, ports, o, this.dataplane(ports), this.log, this.application, () => this.running.delete(s));
    await s.begin();
    this.running.add(s);
    return new StreamReply({ id: s.id, interfaces: ports.map((p) => ({ name: p.name, type: p.type, bridge: p.bridge })), snaplen: o.snaplen,
      direction: o.direction, count: o.count }, (sock) => s.attach(sock));
  }

  /** A port was deleted: a capture left with none of its ports ends. */
  portDeleted(name: string): void {
    for (const s of this.running) s.portDeleted(name);
  }

  async stopAll(): Promise<void> {
    await Promise.all([...this.running].map((s) => s.finish('the daemon is stopping')));
  }
}

class CaptureSession {
  private readonly ctl = captureControl();
  private readonly stats = captureStats(this.ctl);
  private ring: Mapping | undefined;
  private reader: CaptureReader | undefined;
  private sock: Socket | undefined;
  private timer: NodeJS.Timeout | undefined;
  private finishing: Promise<void> | undefined;
  private readonly delivered: number[];
  private total = 0;
  private readonly gone = new Set<string>();
  private readonly startTs = now();

  constructor(readonly id: number, private readonly ports: CapturedPort[], private readonly o: CaptureOptions, private readonly dataplane: Dataplane,
    private readonly log: Log, private readonly application: string, private readonly onEnd: () => void) {
    this.delivered = ports.map(() => 0);
  }

  /** Make the ring and start the dataplane writing into it. */
  async begin(): Promise<void> {
    this.ring = mapShared('pier-capture', RING_BYTES);
    try {
      await this.dataplane.request({ op: 'capture-start', id: this.id, ctl: this.ctl, fd: this.ring.fd, size: RING_BYTES, snaplen: this.o.snaplen, slots: this.ports.map((p) => p.index), dirs: DIRECTIONS[this.o.direction] });
    } catch (e) {
      unmap(this.ring);
      this.ring = undefined;
      throw new PierError('EINTERNAL', `the capture could not start: ${(e as Error).message}`, 'look at the daemon\'s log');
    }
    this.reader = new CaptureReader(this.ctl, new Uint8Array(this.ring.buffer));
    this.log.info({ capture: this.id, ports: this.ports.map((p) => p.name), snaplen: this.o.snaplen, count: this.o.count }, 'capture started');
  }

  attach(sock: Socket): void {
    this.sock = sock;
    sock.on('error', () => undefined);
    // The reader half-closes to stop (pier capture interrupted): what is in the ring and the
    // statistics still come. A reader that goes away entirely gets nothing more.
    sock.once('end', () => void this.finish('stopped by the reader'));
    sock.once('close', () => void this.finish('the reader went away'));
    sock.on('data', () => undefined);
    sock.resume();
    if (sock.destroyed) return void this.finish('the reader went away');
    const head = [sectionHeader(this.application), ...this.ports.map((p) => interfaceDescription(p.name, `pier ${p.type} port on bridge ${p.bridge}`, this.o.snaplen))];
    sock.write(Buffer.concat(head));
    this.timer = setInterval(() => this.drain(false), DRAIN_MS);
  }

  portDeleted(name: string): void {
    if (!this.ports.some((p) => p.name === name)) return;
    this.gone.add(name);
    if (this.ports.every((p) => this.gone.has(p.name))) void this.finish('its ports were deleted');
  }

  /** Turn ring records into Enhanced Packet Blocks on the socket. */
  private drain(final: boolean): void {
    const sock = this.sock;
    const reader = this.reader;
    if (!sock || sock.destroyed || !reader) return;
    if (!final && sock.writableLength > HIGH_WATER) return;
    const out: Buffer[] = [];
    let bytes = 0;
    const ring = reader.ring;
    reader.read((r) => {
      if (!final && bytes >= DRAIN_BYTES) return false;
      if (this.o.count > 0 && this.total >= this.o.count) return true; // past -c: read and dropped
      const b = enhancedPacket({
        iface: r.iface,
        ts: timestamp(r.sec, r.nsec),
        origLen: r.origLen,
        flags: r.dir === CAPTURE_IN ? EPB_INBOUND : EPB_OUTBOUND,
        comment: describeVnetHeader(ring, r.at + REC_VNET),
      }, ring, r.at + REC_DATA, r.capLen);
      out.push(b);
      bytes += b.length;
      this.total++;
      if (r.iface < this.delivered.length) this.delivered[r.iface]!++;
      return true;
    });
    if (out.length > 0) sock.write(out.length === 1 ? out[0]! : Buffer.concat(out, bytes));
    if (reader.corrupt) {
      this.log.warn({ capture: this.id }, 'capture ring corrupt: capture ended');
      void this.finish('its ring was corrupt');
    } else if (!final && this.o.count > 0 && this.total >= this.o.count) {
      void this.finish(`${this.o.count} packets captured`);
    }
  }

  /** Stop the dataplane's copies, send what is left and the statistics, close. Once. */
  finish(why: string): Promise<void> {
    this.finishing ??= this.end(why);
    return this.finishing;
  }

  private async end(why: string): Promise<void> {
    clearInterval(this.timer);
    await this.dataplane.request({ op: 'capture-stop', id: this.id }).catch(() => undefined);
    const sock = this.sock;
    if (sock && !sock.destroyed && sock.writable) {
      this.drain(true);
      const end = now();
      sock.end(Buffer.concat(this.ports.map((_p, i) => interfaceStatistics({
        iface: i, start: this.startTs, end, received: this.stats[2 * i]!, dropped: this.stats[2 * i + 1]!, delivered: this.delivered[i]!,
      }))));
    }
    if (this.ring) unmap(this.ring);
    this.ring = undefined;
    this.reader = undefined;
    this.onEnd();
    const lost = this.ports.reduce((s, _p, i) => s + this.stats[2 * i + 1]!, 0);
    this.log.info({ capture: this.id, why, packets: this.total, lost }, 'capture ended');
  }
}

function now(): bigint {
  const t = performance.timeOrigin + performance.now();
  const sec = Math.floor(t / 1000);
  return timestamp(sec, Math.min(999_999_999, Math.floor((t - sec * 1000) * 1e6)));
}
