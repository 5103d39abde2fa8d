// `pier`: the daemon and the commands that talk to it, in the spirit of ovs-vsctl.
import { Command, Option } from 'commander';
import { DEFAULT_SOCKET, DEFAULT_STATE_DIR, VERSION } from '../daemon/defaults.ts';
import { PierError } from '../daemon/errors.ts';
import { call } from './client.ts';
import { formatShow, formatStats } from './format.ts';

const program = new Command('pier')
  .version(VERSION)
  .description('a userspace virtual switch for containers whose ports speak virtio')
  .option('--socket <path>', `control socket (env PIER_SOCKET, default ${DEFAULT_SOCKET})`)
  .showHelpAfterError();

function socketOf(cmd: Command): string {
  const local = cmd.opts().socket as string | undefined;
  return local ?? (program.opts().socket as string | undefined) ?? process.env.PIER_SOCKET ?? DEFAULT_SOCKET;
}

function client(name: string, description: string): Command {
  return program.command(name).description(description).option('--socket <path>', 'control socket (env PIER_SOCKET)');
}

/** `--pool abc is not a number`, `--pool 9 is out of range`: what is wrong with a numeric flag's value (read with Number()). */
function badNumber(flag: string, v: string): string {
  return `${flag} ${v} is ${v.trim() === '' || Number.isNaN(Number(v)) ? 'not a number' : 'out of range'}`;
}

/** The daemon's reply as JSON, or as `text` renders it (the reply has the shape `text` reads). */
function print<T>(v: unknown, json: boolean, text: (v: T) => string): void {
  process.stdout.write((json ? JSON.stringify(v, null, 2) : text(v as T)) + '\n');
}

program.command('daemon')
  .description('run the switch in the foreground')
  .option('--state-dir <dir>', 'where the desired state is kept', DEFAULT_STATE_DIR)
  .option('--socket <path>', 'control socket (env PIER_SOCKET)')
  .addOption(new Option('--socket-mode <mode>', 'permissions of the control socket (octal)').default('0600'))
  .addOption(new Option('--pool <n>', 'packet buffers in the pool (66 KiB each, memory used as touched)').default('4096'))
  .option('--dataplane-threads <n>', 'dataplane threads, each with its own pool of --pool buffers (docs/design/threads.md)', '1')
  .option('--dataplane-cpu <list>', 'pin the dataplane threads to these CPUs (comma-separated; thread i on the i-th, round robin)')
  .option('--metrics [address:port]', 'serve Prometheus metrics at http://ADDRESS:PORT/metrics (alone: 127.0.0.1:9477)')
  .addOption(new Option('--fdb-size <n>', 'MAC addresses each bridge can learn (docs/design/port-security.md)').default('8192'))
  .action(async (o: { stateDir: string; socketMode: string; pool: string; dataplaneThreads: string; dataplaneCpu?: string; metrics?: string | true; fdbSize: string }, cmd: Command) => {
    const mode = parseInt(o.socketMode, 8);
    const pool = Number(o.pool);
    if (!(mode >= 0 && mode <= 0o777)) throw new PierError('EINVAL', `--socket-mode ${o.socketMode} is not an octal mode`, 'for example --socket-mode 0660');
    if (!Number.isInteger(pool) || pool < 64 || pool > 32000) throw new PierError('EINVAL', badNumber('--pool', o.pool), 'use 64..32000 buffers (66 KiB each; the pool must fit in the lower 2 GiB of a dataplane thread\'s memory map)');
    const { Daemon } = await import('../daemon/daemon.ts'); // only the daemon loads koffi, zod, the dataplane
    const ncpu = (await import('node:os')).cpus().length;
    const cpus = o.dataplaneCpu === undefined ? [] : o.dataplaneCpu.split(',').map(Number);
    for (const cpu of cpus) {
      if (!Number.isInteger(cpu) || cpu < 0 || cpu >= ncpu) throw new PierError('EINVAL', `--dataplane-cpu ${o.dataplaneCpu}: ${cpu} is not a CPU of this machine`, `use CPUs 0..${ncpu - 1}, comma-separated`);
    }
    const threads = Number(o.dataplaneThreads);
    const { MAX_DATAPLANE_THREADS } = await import('../ports/fields.ts');
    if (!Number.isInteger(threads) || threads < 1 || threads > MAX_DATAPLANE_THREADS) {
      throw new PierError('EINVAL', badNumber('--dataplane-threads', o.dataplaneThreads), `use 1..${MAX_DATAPLANE_THREADS} (this machine has ${ncpu} CPUs)`);
    }
    const fdbSize = Number(o.fdbSize);
    if (!Number.isInteger(fdbSize) || fdbSize < 16 || fdbSize > 1 << 20) throw new PierError('EINVAL', badNumber('--fdb-size', o.fdbSize), 'use 16..1048576 addresses per bridge');
    const metrics = o.metrics === undefined ? undefined : (await import('../daemon/metrics.ts')).parseListen(o.metrics);
    const d = new Daemon({ stateDir: o.stateDir, socket: socketOf(cmd), socketMode: mode, poolSize: pool, dataplaneThreads: threads, dataplaneCpus: cpus, metrics, fdbSize });
    await d.start();
    let stopping = false;
    const stop = (): void => {
      if (stopping) return;
      stopping = true;
      void d.stop().then(() => process.exit(0), () => process.exit(1));
    };
    process.on('SIGINT', stop);
    process.on('SIGTERM', stop);
  });

client('add-br', 'add a bridge').argument('<bridge>').action(async (br: string, _o, cmd: Command) => {
  await call(socketOf(cmd), 'add-br', [br]);
});
client('del-br', 'delete a bridge and all its ports').argument('<bridge>').action(async (br: string, _o, cmd: Command) => {
  await call(socketOf(cmd), 'del-br', [br]);
});
// A line per kind (its src/ports/<kind>/options.ts), the keys every kind has last; lines fit 80
// columns, as commander wraps the rest without an indent. The list of commands shows the summary.
client('add-port', [
  'add a port from KEY=VALUE options:',
  '  type=tap [netns=] [ip=A/N[,B/M]] [mac=] [mtu=] [ifname=] [offloads=on|off]',
  '  type=vhost-user|vhost-user-client path= [queues=N] [mtu=] [queue-size=N]',
  '      [busy-poll=on|off] [strict-memory=on|off] [packed=on|off] [mac=]',
  '  type=virtio-user path= [server=on|off] [queues=N] [queue-size=N]',
  '      [packed=on|off]',
  '      path=/dev/vhost-net also: [netns=] [ip=] [mac=] [mtu=] [ifname=]',
  '  type=afpacket dev= [netns=] [offloads=on|off]',
  '  type=afxdp dev= [netns=] [queues=N] [mode=auto|native|generic]',
  '      [zero-copy=auto|on|off]',
  '  type=vxlan vni= remote=A[,B] [local=] [dstport=4789] [netns=] [mtu=]',
  '      [rco=on|off]',
  '  every kind: [tag=] [trunks=] [thread=] [port-security=on|off]',
  '      [allowed-addresses=] [mac-limit=] [storm-limit=]',
].join('\n')).summary('add a port from KEY=VALUE options (add-port --help lists them)')
  .argument('<bridge>').argument('<port>').argument('[options...]')
  .action(async (br: string, port: string, kv: string[], _o, cmd: Command) => {
    await call(socketOf(cmd), 'add-port', [br, port, ...kv]);
  });
client('del-port', 'delete a port').argument('<bridge>').argument('<port>').action(async (br: string, port: string, _o, cmd: Command) => {
  await call(socketOf(cmd), 'del-port', [br, port]);
});
client('set-port', [
  'change a port with the KEY=VALUE options of add-port; KEY= drops a key.',
  'What changes live on a running port:',
  '  every kind: tag= trunks= thread= port-security=on|off allowed-addresses=',
  '      mac-limit= storm-limit=',
  '  type=tap: ip= mac= mtu= offloads=',
  '  type=vhost-user|vhost-user-client: mtu= queue-size= busy-poll= strict-memory=',
  '      packed= mac=',
  '  type=virtio-user: ip= mac= mtu= queue-size= packed=',
  '  type=afpacket: offloads=',
  '  type=vxlan: remote= mtu= rco=',
  '--recreate makes the port again for the rest (every key of type=afxdp).',
].join('\n')).summary('change a port: live where it can, else with --recreate (set-port --help lists what is live)')
  .argument('<port>').argument('<options...>').option('--recreate', 'make the port again when a key cannot change live')
  .action(async (port: string, words: string[], o: { recreate?: boolean }, cmd: Command) => {
    const r = await call(socketOf(cmd), 'set-port', [port, ...words, ...(o.recreate ? ['--recreate'] : [])]) as { note?: string };
    if (r.note !== undefined) console.log(r.note);
  });
client('show', 'show bridges and ports (or one of them)').argument('[name]').option('--json', 'machine-readable output')
  .action(async (name: string | undefined, o: { json?: boolean }, cmd: Command) => {
    print(await call(socketOf(cmd), 'show', name ? [name] : []), !!o.json, formatShow);
  });
client('stats', 'per-port counters').argument('[port]').option('--json', 'machine-readable output')
  .action(async (port: string | undefined, o: { json?: boolean }, cmd: Command) => {
    print(await call(socketOf(cmd), 'stats', port ? [port] : []), !!o.json, formatStats);
  });
client('fdb', 'the MAC addresses a bridge has learned').argument('<bridge>').option('--json', 'machine-readable output')
  .action(async (br: string, o: { json?: boolean }, cmd: Command) => {
    const entries = await call(socketOf(cmd), 'fdb', [br]);
    // Per-port counts and the table's totals: text only (the JSON is the entries, as it always
    // was; limits are in pier show --json).
    type Totals = { ports: Array<{ port: string; learned: number; limit: number }>; moves?: number; full?: number; evicted?: number; size?: number };
    const reply = o.json ? undefined : await call(socketOf(cmd), 'fdb-ports', [br]) as Totals | Totals['ports'];
    // A daemon older than this CLI answers with the per-port list alone.
    const t = Array.isArray(reply) ? { ports: reply } as Totals : reply;
    print(entries, !!o.json, (l: Array<{ mac: string; vlan?: number; port: string; age: number; static?: boolean }>) =>
      [' port             VLAN  MAC                age', ...l.map((e) => ` ${e.port.padEnd(16)} ${String(e.vlan ?? 0).padStart(4)}  ${e.mac}  ${e.static ? 'static' : e.age}`),
        ...(t && t.ports.length ? ['', ' learned per port: ' + t.ports.map((p) => `${p.port} ${p.learned}${p.limit ? `/${p.limit}` : ''}`).join(', ')] : []),
        ...(t?.moves !== undefined ? [` moves ${t.moves}, not learned (table full) ${t.full}, evicted for a port owed room ${t.evicted}`] : []),
        ...(t?.size !== undefined ? [` ${l.length} addresses; a table holds at most ${t.size} (pier daemon --fdb-size; one table per dataplane thread)`] : [])].join('\n'));
  });

client('top', 'a live view of per-port rates (pps, bit/s, drops per second and why), the dataplane thread\'s CPU and pool use')
  .option('--interval <seconds>', 'seconds between refreshes', '1')
  .addOption(new Option('--sort <key>', 'order of the ports').choices(['rate', 'drops']).default('rate'))
  .option('--once', 'print one screen (rates over one interval) and exit, for scripts')
  .action(async (o: { interval: string; sort: 'rate' | 'drops'; once?: boolean }, cmd: Command) => {
    const interval = Number(o.interval);
    if (!(interval >= 0.1 && interval <= 3600)) {
      const number = o.interval.trim() !== '' && Number.isFinite(interval);
      throw new PierError('EINVAL', `--interval ${o.interval} is ${number ? 'outside 0.1..3600 seconds' : 'not a number of seconds (0.1..3600)'}`, 'for example --interval 2 (seconds between refreshes)');
    }
    const { rates, renderTop } = await import('./top.ts');
    type Sample = Parameters<typeof rates>[0];
    const socket = socketOf(cmd);
    const sample = async (): Promise<Sample> => await call(socket, 'top') as Sample;
    const tty = process.stdout.isTTY && !o.once;
    let a = await sample();
    for (;;) {
      await new Promise((r) => setTimeout(r, interval * 1000));
      const b = await sample();
      const screen = renderTop(b, rates(a, b), o.sort, tty ? Math.max(40, process.stdout.columns ?? 80) : 80);
      // In place on a terminal: home, clear, the screen.
      process.stdout.write(tty ? `\x1b[H\x1b[2J${screen}\n` : `${screen}\n`);
      if (o.once) return;
      a = b;
    }
  });

client('events', 'what happened to ports and peers (the last 1000 events): links, peers and why they went, failed reconciliations')
  .option('--follow', 'keep printing events as they happen (until interrupted)')
  .option('--json', 'one JSON object per line')
  .action(async (o: { follow?: boolean; json?: boolean }, cmd: Command) => {
    const { formatEvent } = await import('./format.ts');
    const socket = socketOf(cmd);
    type Batch = { events: Array<{ seq: number }>; missed: number; last: number };
    const show = (b: Batch): void => {
      if (b.missed > 0) process.stderr.write(`pier events: ${b.missed} events were dropped from the daemon's log before they were read\n`);
      for (const e of b.events) process.stdout.write((o.json ? JSON.stringify(e) : formatEvent(e as Parameters<typeof formatEvent>[0])) + '\n');
    };
    let b = await call(socket, 'events', []) as Batch;
    show(b);
    if (!o.follow) return;
    // Asked again twice a second for what came after the last one seen: no connection is held
    // open on the daemon, and a reader that falls behind is told what it missed.
    for (;;) {
      await new Promise((r) => setTimeout(r, 500));
      b = await call(socket, 'events', [String(b.last)]) as Batch;
      show(b);
    }
  });

client('capture', 'capture what ports receive and send: pcapng to a file (-w FILE) or stdout (-w -, for tcpdump -r - or tshark -r -), else one line per packet')
  .argument('<ports...>')
  .option('-w, --write <file>', 'write pcapng to FILE, or to stdout with -')
  .option('-c, --count <n>', 'stop after N packets')
  .addOption(new Option('--direction <dir>', 'what the port receives (in), sends (out) or both').choices(['in', 'out', 'both']).default('both'))
  .option('--snaplen <n>', 'keep at most N bytes of each packet (default 262144)')
  .action(async (ports: string[], o: { write?: string; count?: string; direction: string; snaplen?: string }, cmd: Command) => {
    const { capture } = await import('./capture.ts');
    await capture(socketOf(cmd), { ports, ...o });
  });

client('doctor', 'check what this machine offers pier, each finding with its fix; exit 1 if something must be fixed')
  .option('--json', 'machine-readable output')
  .action(async (o: { json?: boolean }, cmd: Command) => {
    const { doctor, formatFindings } = await import('./doctor.ts');
    const findings = await doctor(socketOf(cmd));
    print(o.json ? findings : findings, !!o.json, formatFindings);
    if (findings.some((f) => f.level === 'fail')) process.exitCode = 1;
  });

try {
  await program.parseAsync(process.argv);
} catch (e) {
  const pe = e instanceof PierError ? e : new PierError('EINTERNAL', (e as Error).message);
  process.stderr.write(`pier: error: ${pe.message}\n${pe.hint ? `pier: hint: ${pe.hint}\n` : ''}`);
  process.exit(1);
}
