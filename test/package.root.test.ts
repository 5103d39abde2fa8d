// The package as a user installs it: `npm pack` (which builds dist/), then `npm install -g` of the
// tarball into a private prefix, then the installed `pier`: its version, `doctor --json`, and a
// daemon with two tap ports that forwards a ping, all from the prefix, with no tsx, no TypeScript
// and no other development package there.
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { delNetns, makeNetns, NEEDS, requires, ROOT, sh, waitFor } from './helpers.ts';

const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string; dependencies: Record<string, string>; devDependencies: Record<string, string> };

describe('npm pack and npm install -g (root)', requires(NEEDS.tun), () => {
  // Under /tmp, so that no node_modules of the checkout is on the installed package's way up.
  const dir = mkdtempSync(join(tmpdir(), 'pier-package-'));
  const prefix = join(dir, 'prefix');
  const pier = join(prefix, 'bin', 'pier');
  const installed = join(prefix, 'lib', 'node_modules', 'pier');
  let tarball = '';
  let daemon: ChildProcess | undefined;

  before(() => {
    // In the checkout, as a user would: its prepack script builds dist/ first.
    const pack = spawnSync('npm', ['pack', '--pack-destination', dir], { cwd: ROOT, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: 300_000 });
    assert.equal(pack.status, 0, `npm pack failed: ${pack.stderr}${pack.stdout}`);
    tarball = join(dir, readdirSync(dir).find((f) => f.endsWith('.tgz'))!);
    const install = sh('npm', ['install', '-g', '--prefix', prefix, '--no-audit', '--no-fund', '--prefer-offline', tarball], { timeout: 300_000 });
    assert.equal(install.code, 0, `npm install -g failed: ${install.stderr}${install.stdout}`);
  });

  async function stopDaemon(): Promise<void> {
    const p = daemon;
    if (p && p.exitCode === null && p.signalCode === null) {
      const done = new Promise((r) => p.once('exit', r));
      p.kill('SIGKILL');
      await done;
    }
    daemon = undefined;
  }

  after(async () => {
    await stopDaemon();
    rmSync(dir, { recursive: true, force: true });
  });

  it('packs the build, the launcher and nothing of the sources or tests', () => {
    const files = sh('tar', ['-tzf', tarball]).stdout.split('\n').filter(Boolean);
    for (const f of ['package/package.json', 'package/README.md', 'package/bin/pier', 'package/bin/pier-cni', 'package/dist/cni/main.cjs', 'package/dist/cli/main.js', 'package/dist/daemon/daemon.js', 'package/dist/daemon/worker.js'])
      assert.ok(files.includes(f), `${f} is not in the package`);
    const stray = files.filter((f) => !/^package\/(package\.json|README\.md|LICENSE|bin\/pier|bin\/pier-cni|dist\/.*\.c?js)$/.test(f) || /\.test\.c?js$/.test(f));
    assert.deepEqual(stray, [], 'files that do not belong in the package');
  });

  it('installs pier on the PATH with the runtime dependencies only', () => {
    assert.ok(existsSync(pier), `${pier} missing`);
    assert.deepEqual(readdirSync(join(prefix, 'lib', 'node_modules')), ['pier']);
    const deps = readdirSync(join(installed, 'node_modules')).flatMap((d) => d.startsWith('@') ? readdirSync(join(installed, 'node_modules', d)).map((s) => `${d}/${s}`) : [d]);
    for (const d of Object.keys(pkg.dependencies)) assert.ok(deps.includes(d), `runtime dependency ${d} not installed`);
    for (const d of [...Object.keys(pkg.devDependencies), 'esbuild', 'pino']) assert.ok(!deps.includes(d), `${d} installed with the package`);
    // koffi's native code comes from its optional per-platform package (install scripts do not run).
    assert.ok(deps.some((d) => d.startsWith('@koromix/koffi-linux-')), `koffi's prebuilt binary is missing: ${deps.join(' ')}`);
  });

  it('pier-cni is on the PATH too and answers VERSION from the prefix (a link into a CNI bin directory works the same)', () => {
    const cni = join(prefix, 'bin', 'pier-cni');
    assert.ok(existsSync(cni), `${cni} missing`);
    const r = sh(cni, [], { env: { ...process.env, CNI_COMMAND: 'VERSION' } });
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.deepEqual(JSON.parse(r.stdout).supportedVersions, ['0.4.0', '1.0.0', '1.1.0']);
  });

  it('pier --version and pier doctor --json run from the prefix', () => {
    const v = sh(pier, ['--version']);
    assert.equal(v.code, 0, v.stderr);
    assert.equal(v.stdout.trim(), pkg.version);
    const d = sh(pier, ['doctor', '--json', '--socket', join(dir, 'none.sock')]);
    assert.ok(d.code === 0 || d.code === 1, `pier doctor: ${d.stderr}`);
    const findings = JSON.parse(d.stdout) as Array<{ check: string; level: string }>;
    assert.ok(findings.some((f) => f.check === '/dev/net/tun' && f.level === 'ok'), d.stdout);
  });

  it('the installed daemon forwards between two tap ports (dataplane thread from dist, koffi)', async () => {
    const socket = join(dir, 'pier.sock');
    let log = '';
    const p = spawn(pier, ['daemon', '--socket', socket, '--state-dir', join(dir, 'state')], { stdio: ['ignore', 'pipe', 'pipe'], cwd: dir });
    daemon = p;
    const ns = makeNetns(2);
    try {
      p.stdout.on('data', (b) => (log += b));
      p.stderr.on('data', (b) => (log += b));
      await waitFor(() => {
        assert.ok(p.exitCode === null && p.signalCode === null, `the installed daemon exited: ${log}`);
        return log.includes('"msg":"pier daemon ready"');
      }, 20_000, () => `the installed daemon to start: ${log}`, 50);
      const run = (...args: string[]): string => {
        const r = sh(pier, ['--socket', socket, ...args]);
        assert.equal(r.code, 0, `pier ${args.join(' ')}: ${r.stderr}`);
        return r.stdout;
      };
      run('add-br', 'br0');
      run('add-port', 'br0', 'pa', 'type=tap', `netns=${ns[0]}`, 'ip=10.79.0.1/24', 'ifname=eth0');
      run('add-port', 'br0', 'pb', 'type=tap', `netns=${ns[1]}`, 'ip=10.79.0.2/24', 'ifname=eth0');
      const ping = sh('ip', ['netns', 'exec', ns[0]!, 'ping', '-c', '2', '-i', '0.2', '-W', '2', '10.79.0.2']);
      assert.equal(ping.code, 0, `ping through the installed pier failed: ${ping.stdout}${ping.stderr}`);
      const show = JSON.parse(run('show', '--json')) as { dataplane: { tid: number } };
      assert.ok(show.dataplane.tid > 0);
      run('del-br', 'br0');
      const done = new Promise((r) => p.once('exit', r));
      p.kill('SIGTERM');
      await done;
      assert.equal(p.exitCode, 0, log);
      assert.match(log, /"msg":"pier daemon stopped"/);
    } finally {
      await stopDaemon();
      delNetns(ns);
    }
  });
});
