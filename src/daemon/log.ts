// The daemon's log: one JSON object per line on stderr, written synchronously (a daemon that hangs
// must still have said what it was doing), in pino's format so existing tools read it:
// {"level":30,"time":<ms>,"pid":..,"hostname":"..","name":"pier",<fields>,"msg":".."}.
// Levels are pino's numbers; debug lines are dropped unless the logger is made with 'debug'.
import { writeSync } from 'node:fs';
import { hostname } from 'node:os';

const LEVELS = { debug: 20, info: 30, warn: 40, error: 50 } as const;
export type Level = keyof typeof LEVELS;
type Fields = object;

/** EAGAIN (stderr made non-blocking, its pipe full) is retried for this long, then the line is dropped. */
const EAGAIN_GIVE_UP_MS = 1000;

export class Logger {
  private readonly min: number;
  private readonly head: string;
  private readonly nap = new Int32Array(new SharedArrayBuffer(4));

  constructor(name: string, level: Level = 'info', private readonly fd = 2) {
    this.min = LEVELS[level];
    // pid, hostname and name never change: serialised once.
    this.head = `,"pid":${process.pid},"hostname":${JSON.stringify(hostname())},"name":${JSON.stringify(name)}`;
  }

  debug(fields: Fields | string, msg?: string): void { this.write(LEVELS.debug, fields, msg); }
  info(fields: Fields | string, msg?: string): void { this.write(LEVELS.info, fields, msg); }
  warn(fields: Fields | string, msg?: string): void { this.write(LEVELS.warn, fields, msg); }
  error(fields: Fields | string, msg?: string): void { this.write(LEVELS.error, fields, msg); }

  private write(level: number, fields: Fields | string, msg: string | undefined): void {
    if (level < this.min) return;
    if (typeof fields === 'string') [fields, msg] = [{}, fields];
    let body: string;
    try {
      body = JSON.stringify({ ...fields, msg }, serialise).slice(1, -1); // without its braces
    } catch (e) {
      // A cycle in the fields: the line still says what happened.
      body = `"logError":${JSON.stringify(String(e))},"msg":${JSON.stringify(msg)}`;
    }
    this.out(`{"level":${level},"time":${Date.now()}${this.head}${body ? ',' + body : ''}}\n`);
  }

  private out(line: string): void {
    let buf = Buffer.from(line);
    const giveUp = Date.now() + EAGAIN_GIVE_UP_MS;
    while (buf.length > 0) {
      try {
        buf = buf.subarray(writeSync(this.fd, buf));
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'EAGAIN' || Date.now() > giveUp) return; // never worth the daemon
        Atomics.wait(this.nap, 0, 0, 5);
      }
    }
  }
}

/** Errors as pino's err serializer writes them (type, message, stack, own fields); bigints as numbers (text beyond 2^53). */
function serialise(_key: string, v: unknown): unknown {
  if (v instanceof Error) return Object.assign({ type: v.constructor.name, message: v.message, stack: v.stack }, v);
  if (typeof v === 'bigint') return Number.isSafeInteger(Number(v)) ? Number(v) : v.toString();
  return v;
}
