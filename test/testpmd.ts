// DPDK testpmd as a test peer: started with virtio-user vdevs, driven through its interactive
// prompt, stopped politely or killed.
import { spawn, type ChildProcess } from 'node:child_process';
import { rmSync } from 'node:fs';
import { waitFor } from './helpers.ts';

let counter = 0;

export class Testpmd {
  readonly prefix = `pt${process.pid}x${counter++}`;
  proc: ChildProcess | undefined;
  log = '';

  constructor(readonly vdevs: string[], readonly mode: string, readonly extra: string[] = [], readonly eal: string[] = []) {}

  /** Start and wait until forwarding runs (or throw with the log). */
  async start(timeoutMs = 30_000): Promise<void> {
    this.log = '';
    const args = ['-l', '0,1', '--no-pci', '--no-huge', '-m', '1024', '--single-file-segments', `--file-prefix=${this.prefix}`, ...this.eal,
      ...this.vdevs.flatMap((v) => ['--vdev', v]),
      '--', '-i', `--forward-mode=${this.mode}`, '--auto-start', '--total-num-mbufs=16384', ...this.extra];
    // stdbuf: testpmd's printf output is block-buffered into a pipe; line-buffer it so it can be read live.
    const p = spawn('stdbuf', ['-oL', '-eL', 'dpdk-testpmd', ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
    this.proc = p;
    p.stdout.on('data', (d) => (this.log += d));
    p.stderr.on('data', (d) => (this.log += d));
    await waitFor(() => {
      if (p.exitCode !== null || p.signalCode !== null) throw new Error(`testpmd exited (${p.exitCode ?? p.signalCode}): ${this.log.slice(-2000)}`);
      if (this.log.includes('No probed ethernet devices')) throw new Error(`testpmd found no port: ${this.log.slice(-2000)}`);
      return this.log.includes('Start automatic packet forwarding') || this.log.includes('forwards packets on');
    }, timeoutMs, () => `testpmd to start forwarding: ${this.log.slice(-2000)}`, 100);
  }

  /** Send a command and wait until what it printed since matches `done`; returns that output. */
  async ask(cmd: string, done: (out: string) => boolean, timeoutMs = 5000): Promise<string> {
    const from = this.log.length;
    this.command(cmd);
    return waitFor(() => {
      const out = this.log.slice(from);
      return done(out) ? out : '';
    }, timeoutMs, () => `testpmd's answer to '${cmd}': ${this.log.slice(from).slice(-2000)}`);
  }

  command(cmd: string): void {
    this.proc?.stdin?.write(cmd + '\n');
  }

  /** Ask for port stats and return the RX/TX packet counts of each port. */
  async stats(): Promise<Array<{ rx: number; tx: number }>> {
    const each = /RX-packets:\s+(\d+).*?TX-packets:\s+(\d+)/gs;
    const out = await this.ask('show port stats all', (o) => [...o.matchAll(each)].length >= this.vdevs.length);
    return [...out.matchAll(each)].map((m) => ({ rx: Number(m[1]), tx: Number(m[2]) }));
  }

  async stop(): Promise<void> {
    const p = this.proc;
    if (!p || p.exitCode !== null || p.signalCode !== null) return;
    const done = new Promise((r) => p.once('exit', r));
    this.command('quit');
    const t = setTimeout(() => p.kill('SIGKILL'), 5000);
    await done;
    clearTimeout(t);
    this.cleanup();
  }

  async kill(): Promise<void> {
    const p = this.proc;
    if (!p || p.exitCode !== null || p.signalCode !== null) return;
    const done = new Promise((r) => p.once('exit', r));
    p.kill('SIGKILL');
    await done;
    this.cleanup();
  }

  private cleanup(): void {
    rmSync(`/var/run/dpdk/${this.prefix}`, { recursive: true, force: true });
  }
}
