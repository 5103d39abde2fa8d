// vhost-user ports against a real QEMU VM (issue 8: "the QEMU-style flows still pass"), as root:
// qemu-system-x86_64 under TCG boots the stock Debian kernel from ../shared/tools/vmrun's cache
// with a tiny initramfs (test/qemu/guest.ts), guest RAM in a shared memfd
// (memory-backend-memfd,share=on) and a vhost-user virtio-net NIC on pier's socket; a container
// on a tap port and the guest ping each other through pier. Flows: boot and ping both ways, with
// what pier shows (features, vrings, QEMU's sealed memfd); the guest's link down/up and a real
// driver reset (QEMU stops and restarts the vrings); pier restarted under the running VM (QEMU
// reconnects and sets the device up again); QEMU killed and started again on the same
// socket, and a hung QEMU replaced by a new one (the newest session wins), with the counters and
// the daemon's fds checked; pier as the client of a QEMU that listens (server=on).
//
// QEMU 7.2 (Debian 1:7.2+dfsg-7+deb12u18) under TCG segfaults in vhost_net_start when the NIC
// uses MSI-X (msix_set_vector_notifiers -> virtio_pci_vector_unmask, before any vring message),
// with DPDK's net_vhost as backend as much as with pier: the NIC is `vectors=0` (INTx) here.
//
// Without QEMU, or without the guest kernel and ../shared/tools/vmrun to fetch it, the suite is
// skipped with what is missing (a failure under CI=true). It needs Debian's qemu-system-x86, and
// Debian's archive the first time, when `vmrun --setup` fills /var/cache/vmrun. Each test boots
// a VM of its own on a port of its own, and kills it and deletes the port in finally.
import assert from 'node:assert/strict';
import { closeSync, existsSync, mkdtempSync, openSync, readdirSync, readlinkSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import * as libc from '../src/sys/libc.ts';
import { delNetns, makeNetns, NEEDS, ping, pingUntil, requires, TestDaemon, waitFor } from './helpers.ts';
import { type GuestImage, guestMissing, prepareGuest, QemuVm } from './qemu/guest.ts';

const NET = '10.83.0';
const TAP_IP = `${NET}.1`;
const MiB = 1024 * 1024;
/** How long a guest may take to answer ping (bringing eth0 up under TCG). */
const GUEST_PING_MS = 60_000;
// vhost-user requests (as QEMU's trace numbers them).
const REQ = { SET_FEATURES: 2, SET_MEM_TABLE: 5, SET_VRING_NUM: 8, SET_VRING_ADDR: 9, SET_VRING_BASE: 10, GET_VRING_BASE: 11, SET_VRING_KICK: 12, SET_VRING_CALL: 13 };

function openFds(pid: number): number {
  return readdirSync(`/proc/${pid}/fd`).length;
}

/** The daemon's fd count once it holds still (two reads 200 ms apart agree). */
async function stableFds(pid: number): Promise<number> {
  let last = -1;
  return waitFor(() => {
    const n = openFds(pid);
    const settled = n === last;
    last = n;
    return settled ? n : 0;
  }, 10_000, () => `the daemon's fd count to settle (last ${last})`, 200);
}

/** Wait until the daemon holds `want` fds (a leak never gets there); throws with the count it has. */
async function fdsBackTo(pid: number, want: number, what: string): Promise<void> {
  await waitFor(() => openFds(pid) === want, 10_000, () => `${what}: ${want} fds (now ${openFds(pid)})`, 100);
}

/** The seals on QEMU's guest-RAM memfd, read through /proc/PID/fd (F_GET_SEALS). */
function qemuMemfdSeals(pid: number): number {
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    let link: string;
    try { link = readlinkSync(`/proc/${pid}/fd/${fd}`); } catch { continue; }
    if (!link.startsWith('/memfd:memory-backend-memfd')) continue;
    const mine = openSync(`/proc/${pid}/fd/${fd}`, 'r');
    try {
      return libc.fcntlInt(mine, libc.F_GET_SEALS);
    } finally {
      closeSync(mine);
    }
  }
  throw new Error(`QEMU ${pid} holds no memory-backend-memfd`);
}

function count(list: number[], req: number): number {
  return list.filter((r) => r === req).length;
}

describe('vhost-user ports with a QEMU VM (root, TCG)', { timeout: 300_000, ...requires(NEEDS.tun, { name: 'QEMU and a guest kernel', missing: guestMissing }) }, () => {
  const d = new TestDaemon();
  const dir = mkdtempSync(join(tmpdir(), 'pier-qemu-'));
  const vms: QemuVm[] = [];
  let img: GuestImage;
  let ns = '';

  /** Boot a VM and wait until its init pinged the tap (throws with the console otherwise). */
  async function boot(chardev: string, n: number): Promise<QemuVm> {
    const vm = new QemuVm(img, { chardev, mac: `52:54:00:83:00:${n.toString(16).padStart(2, '0')}`, ip: `${NET}.${n}/24`, peer: TAP_IP });
    vms.push(vm);
    vm.start();
    const m = await vm.waitFor(/@@ping-peer (\w+) tries=(\d+) up=([\d.]+)/, 120_000);
    assert.equal(m[1], 'ok', `the guest's init could not ping ${TAP_IP}: ${vm.tail()}\n--- daemon ---\n${d.log.slice(-2000)}`);
    await vm.waitFor(/@@ready\n/, 10_000);
    return vm;
  }

  function peer(port: string): any {
    return d.json('show', port).port.peer;
  }

  /** Port `port` (pier listens) and a VM booted on it (QEMU redials every second: reconnect=1). */
  async function vmOn(port: string): Promise<QemuVm> {
    d.ok('add-port', 'br0', port, 'type=vhost-user', `path=${d.dir}/${port}.sock`);
    return boot(`socket,id=c0,path=${d.dir}/${port}.sock,reconnect=1`, 2);
  }

  /** Kill every VM the test started and delete its ports (each may not exist). */
  async function teardown(...ports: string[]): Promise<void> {
    for (const vm of vms.splice(0)) await vm.kill();
    for (const p of ports) d.pier('del-port', 'br0', p);
  }

  before(async () => {
    img = prepareGuest(dir); // throws with the reason when `vmrun --setup` cannot fill its cache
    [ns] = makeNetns(1) as [string];
    await d.start();
    d.ok('add-br', 'br0');
    d.ok('add-port', 'br0', 'c1', 'type=tap', `netns=${ns}`, `ip=${TAP_IP}/24`);
  });

  after(async () => {
    for (const vm of vms) await vm.kill();
    await d.cleanup();
    delNetns([ns]);
    rmSync(dir, { recursive: true, force: true });
  });

  it('a VM boots on a vhost-user port: pings both ways, features, vrings and QEMU\'s sealed memfd in pier show', async (t) => {
    try {
      t.diagnostic(`${img.qemu}; kernel ${img.kver}; initramfs modules ${img.modules.join(' ')}${img.notes.length ? `; ${img.notes.join('; ')}` : ''}`);
      const t0 = Date.now();
      const vm = await vmOn('vm1');
      t.diagnostic(`boot to guest ping: ${Date.now() - t0} ms`);
      assert.match(await pingUntil(ns, `${NET}.2`, [], GUEST_PING_MS), /2 received/);
      // Full-size frames (MTU 1500) cross both ways intact: ping checks the echoed pattern.
      assert.match(await pingUntil(ns, `${NET}.2`, ['-s', '1472', '-M', 'do', '-p', 'a5c3'], GUEST_PING_MS), /2 received/);

      const p = peer('vm1');
      assert.equal(p.connected, true);
      assert.equal(p.link, 'up');
      assert.equal(p.connects, 1);
      assert.equal(p.disconnects, 0);
      assert.deepEqual(p.queuePairs, { configured: 1, enabled: 1 });
      // What QEMU and the guest's virtio_net took of what pier offers (all of it, without MQ/MTU,
      // which pier offers only with queues>1 / mtu=).
      for (const f of ['VERSION_1', 'MRG_RXBUF', 'EVENT_IDX', 'INDIRECT_DESC', 'CSUM', 'GUEST_CSUM', 'HOST_TSO4', 'HOST_TSO6', 'GUEST_TSO4', 'GUEST_TSO6', 'PROTOCOL_FEATURES']) {
        assert.ok(p.features.negotiated.includes(f), `${f} not negotiated: ${p.features.negotiated}`);
      }
      assert.deepEqual(p.vrings.map((v: any) => [v.vring, v.size]), [[0, 256], [1, 256]]);
      // Guest RAM: QEMU sends the memfd's sections; the guest's 256 MiB are contiguous in the file
      // and QEMU merges them, so one region here (the ROMs are not shared memory and not sent).
      // QEMU's memory-backend-memfd is created with MFD_ALLOW_SEALING and sealed by QEMU itself
      // (seal=on, the default: F_SEAL_GROW | F_SEAL_SHRINK | F_SEAL_SEAL), so pier finds it
      // already sealed against shrinking: 'sealed', not 'sealed by pier' nor 'unsealed'.
      assert.ok(p.memory.length >= 1, JSON.stringify(p.memory));
      for (const r of p.memory) {
        assert.match(r.file, /^\/memfd:memory-backend-memfd/, JSON.stringify(r));
        assert.equal(r.seal, 'sealed', JSON.stringify(r));
        assert.equal(r.sealDetail, undefined);
      }
      assert.equal(p.memory.reduce((s: number, r: any) => s + r.size, 0), 256 * MiB, JSON.stringify(p.memory));
      const seals = qemuMemfdSeals(vm.pid);
      assert.equal(seals & (libc.F_SEAL_SEAL | libc.F_SEAL_SHRINK | libc.F_SEAL_GROW), libc.F_SEAL_SEAL | libc.F_SEAL_SHRINK | libc.F_SEAL_GROW, `QEMU's memfd seals: 0x${seals.toString(16)}`);
      assert.equal(p.protocolErrors, 0);
      assert.deepEqual(p.refused, {});
      assert.equal(p.lastError, undefined);
      // QEMU set the device up the standard way: memory table (with a reply asked), then per vring
      // num, base, addr, kick and call.
      const reqs = vm.requests();
      assert.ok(count(reqs, REQ.SET_MEM_TABLE) >= 1, `SET_MEM_TABLE: ${reqs}`);
      for (const r of [REQ.SET_VRING_NUM, REQ.SET_VRING_ADDR, REQ.SET_VRING_BASE, REQ.SET_VRING_KICK]) assert.equal(count(reqs, r), 2, `request ${r} x2: ${reqs}`);
      const s = d.json('stats', 'vm1')[0].counters;
      assert.ok(s.rx_packets > 0 && s.tx_packets > 0, JSON.stringify(s));
    } finally {
      await teardown('vm1');
    }
  });

  it('the guest takes eth0 down and up, then resets its device (driver unbound and bound): QEMU stops and restarts the vrings, traffic resumes', async (t) => {
    try {
      const vm = await vmOn('vm1');
      const connects = peer('vm1').connects;
      // 1. ip link down/up: Linux's virtio_net only stops NAPI and its refill work; the device
      //    status does not change, so QEMU keeps the vhost device (and pier's rings) running.
      let before = vm.requests().length;
      let r = await vm.run('ip link set eth0 down && ip link set eth0 up && ping -c 3 -W 2 ' + TAP_IP);
      assert.equal(r.rc, 0, `guest ping after link down/up: ${r.out}`);
      await pingUntil(ns, `${NET}.2`, [], GUEST_PING_MS);
      const linkReqs = vm.requests().slice(before);
      t.diagnostic(`vhost-user requests during ip link down/up: [${linkReqs}]`);
      assert.equal(count(linkReqs, REQ.GET_VRING_BASE), 0, `link down/up stopped no vring: [${linkReqs}]`);

      // 2. A real reset of the device: unbinding virtio_net writes status 0 (QEMU: vhost_net_stop,
      //    GET_VRING_BASE per vring); binding it again negotiates features and sets up the rings
      //    anew (SET_FEATURES, SET_MEM_TABLE, SET_VRING_*), as after a guest reboot.
      before = vm.requests().length;
      r = await vm.run('D=$(basename $(readlink /sys/class/net/eth0/device)); echo $D > /sys/bus/virtio/drivers/virtio_net/unbind && echo "@@unbound $D"');
      assert.equal(r.rc, 0, r.out);
      const dev = /@@unbound (\S+)/.exec(r.out)![1]!;
      await waitFor(() => vm.requests().slice(before).filter((x) => x === REQ.GET_VRING_BASE).length >= 2, 15_000, 'QEMU to fetch both vrings\' bases (GET_VRING_BASE)', 100);
      // Between the reset and the new set-up, pier runs no vring and the session stays.
      let p = await waitFor(() => { const q = peer('vm1'); return q.vrings.length === 0 ? q : null; }, 15_000, 'pier to stop the rings', 100);
      assert.equal(p.connected, true);
      assert.equal(p.connects, connects, 'a device reset is not a new session');
      t.diagnostic(`after the reset pier shows link ${p.link}, queue pairs ${JSON.stringify(p.queuePairs)}`);
      const mid = vm.requests().length;
      r = await vm.run(`echo ${dev} > /sys/bus/virtio/drivers/virtio_net/bind && ip addr add ${NET}.2/24 dev eth0 && ip link set eth0 up && ping -c 5 -W 2 ${TAP_IP}`);
      assert.equal(r.rc, 0, `guest ping after its driver was bound again: ${r.out}${vm.tail()}`);
      await pingUntil(ns, `${NET}.2`, [], GUEST_PING_MS);
      const resetReqs = vm.requests().slice(before);
      t.diagnostic(`vhost-user requests during the reset: [${resetReqs}]`);
      const again = vm.requests().slice(mid);
      for (const q of [REQ.SET_FEATURES, REQ.SET_VRING_NUM, REQ.SET_VRING_ADDR, REQ.SET_VRING_BASE, REQ.SET_VRING_KICK]) {
        assert.ok(count(again, q) >= (q === REQ.SET_FEATURES ? 1 : 2), `request ${q} after the new bind: [${again}]`);
      }
      p = peer('vm1');
      assert.equal(p.connected, true);
      assert.equal(p.link, 'up');
      assert.equal(p.connects, connects);
      assert.equal(p.vrings.length, 2);
      assert.ok(p.features.negotiated.includes('MRG_RXBUF'));
      assert.equal(p.protocolErrors, 0);
      assert.equal(p.lastError, undefined);
    } finally {
      await teardown('vm1');
    }
  });

  it('pier restarts under a running VM (QEMU reconnect=1): QEMU sets the device up again at its rings\' indexes, traffic resumes', async (t) => {
    try {
      const vm = await vmOn('vm1');
      const before = vm.requests().length;
      const old = peer('vm1').vrings.map((v: any) => v.lastAvailIdx);
      await d.stop('SIGTERM');
      // QEMU sees its backend gone (its GET_VRING_BASE cannot be answered: "vhost VQ n ring restore
      // failed" on its stderr) and redials every second; the restarted daemon listens again.
      await d.start();
      await pingUntil(ns, `${NET}.2`, [], GUEST_PING_MS);
      const r = await vm.run(`ping -c 3 -W 2 ${TAP_IP}`);
      assert.equal(r.rc, 0, r.out);
      const again = vm.requests().slice(before);
      t.diagnostic(`vhost-user requests after the restart: [${again}]`);
      assert.ok(count(again, REQ.SET_MEM_TABLE) >= 1 && count(again, REQ.SET_VRING_KICK) >= 2, `[${again}]`);
      const p = peer('vm1');
      assert.equal(p.connected, true);
      assert.equal(p.connects, 1, 'a new daemon, a first session');
      assert.equal(p.link, 'up');
      assert.equal(p.memory[0].seal, 'sealed');
      // The rings went on from where the old daemon left them (QEMU's own copy of the indexes).
      p.vrings.forEach((v: any, i: number) => assert.ok(v.lastAvailIdx >= old[i], `vring ${i}: ${old[i]} -> ${v.lastAvailIdx}`));
      assert.equal(p.protocolErrors, 0);
    } finally {
      if (!d.proc) await d.start(); // the next test finds the daemon running
      await teardown('vm1');
    }
  });

  it('QEMU killed (SIGKILL) and started again on the same socket, then a hung QEMU replaced by a new one: the newest session wins, counters move, no fd leak', async () => {
    try {
      const old = await vmOn('vm1');
      const pid = d.json('show').pid as number;
      const p0 = peer('vm1');
      const fdsUp = await stableFds(pid); // one VM connected, its rings running
      await old.kill('SIGKILL');
      let p = await waitFor(() => { const q = peer('vm1'); return q.connected ? null : q; }, 15_000, 'pier to see the killed QEMU gone', 100);
      assert.equal(p.disconnects, p0.disconnects + 1);
      assert.equal(p.ended['peer-closed'], (p0.ended['peer-closed'] ?? 0) + 1);
      assert.equal(p.link, 'down');
      assert.deepEqual(p.memory, [], 'the dead VM\'s memory is unmapped');
      const fdsDown = await stableFds(pid);
      assert.ok(fdsDown < fdsUp, `the session's fds are closed: ${fdsUp} -> ${fdsDown}`);
      assert.equal(ping(ns, `${NET}.2`, ['-c', '1', '-W', '1']).code, 1, 'nobody answers while the VM is down');

      // A new VM on the same socket.
      const vm2 = await boot(`socket,id=c0,path=${d.dir}/vm1.sock,reconnect=1`, 2);
      await pingUntil(ns, `${NET}.2`, [], GUEST_PING_MS);
      p = peer('vm1');
      assert.equal(p.connected, true);
      assert.equal(p.connects, p0.connects + 1);
      assert.equal(p.disconnects, p0.disconnects + 1);
      assert.equal(p.memory[0].seal, 'sealed');
      await fdsBackTo(pid, fdsUp, 'the daemon to hold as many fds with the new VM as with the old one');

      // A QEMU that hangs (SIGSTOP: its connection stays open, it answers nothing) and a new VM on
      // the same socket: the newcomer's first set-up request takes the port over (superseded).
      vm2.signal('SIGSTOP');
      const vm3 = await boot(`socket,id=c0,path=${d.dir}/vm1.sock,reconnect=1`, 2);
      await pingUntil(ns, `${NET}.2`, [], GUEST_PING_MS);
      p = peer('vm1');
      assert.equal(p.connected, true);
      assert.equal(p.connects, p0.connects + 2);
      assert.equal(p.disconnects, p0.disconnects + 2);
      assert.equal(p.ended.superseded, (p0.ended.superseded ?? 0) + 1, JSON.stringify(p.ended));
      assert.equal(p.newcomers, 0);
      // The hung one dies for good; pier let its connection go already, so nothing changes.
      await vm2.kill('SIGKILL');
      await pingUntil(ns, `${NET}.2`, [], GUEST_PING_MS);
      p = peer('vm1');
      assert.equal(p.connected, true);
      assert.equal(p.disconnects, p0.disconnects + 2);
      await fdsBackTo(pid, fdsUp, 'the daemon to hold as many fds with the third VM');
      await vm3.kill('SIGKILL');
      await waitFor(() => !peer('vm1').connected, 15_000, 'pier to see the third QEMU gone', 100);
      await fdsBackTo(pid, fdsDown, 'the daemon to hold as many fds after the last VM as after the first');
      assert.equal(peer('vm1').disconnects, p0.disconnects + 3);
    } finally {
      await teardown('vm1');
    }
  });

  it('client mode: pier connects to a QEMU that listens (server=on,wait=off), strict-memory=on accepts its memfd, and redials after QEMU is killed and restarted', async (t) => {
    try {
      const sock = `${d.dir}/vm2.sock`;
      const chardev = `socket,id=c0,path=${sock},server=on,wait=off`;
      // QEMU creates the socket and waits at the netdev for its backend before the guest runs.
      const mk = (): QemuVm => {
        const vm = new QemuVm(img, { chardev, mac: '52:54:00:83:00:03', ip: `${NET}.3/24`, peer: TAP_IP });
        vms.push(vm);
        vm.start();
        return vm;
      };
      let vm = mk();
      await waitFor(() => { try { return readdirSync(d.dir).includes('vm2.sock'); } catch { return false; } }, 30_000, 'QEMU to listen', 100);
      d.ok('add-port', 'br0', 'vm2', 'type=vhost-user-client', `path=${sock}`, 'strict-memory=on');
      let m = await vm.waitFor(/@@ping-peer (\w+)/, 120_000);
      assert.equal(m[1], 'ok', vm.tail());
      await pingUntil(ns, `${NET}.3`, [], GUEST_PING_MS);
      let p = peer('vm2');
      assert.equal(p.mode, 'client');
      assert.equal(p.connected, true);
      assert.equal(p.strictMemory, true);
      assert.equal(p.memory[0].seal, 'sealed');
      assert.equal(p.lastError, undefined);
      const connects = p.connects;

      await vm.kill('SIGKILL');
      await waitFor(() => !peer('vm2').connected, 15_000, 'pier to see the listening QEMU gone', 100);
      vm = mk(); // QEMU unlinks the stale socket and listens again; pier redials (backoff up to 5 s)
      m = await vm.waitFor(/@@ping-peer (\w+)/, 120_000);
      assert.equal(m[1], 'ok', vm.tail());
      await pingUntil(ns, `${NET}.3`, [], GUEST_PING_MS);
      p = peer('vm2');
      assert.equal(p.connected, true);
      assert.ok(p.connects >= connects + 1, `connects ${connects} -> ${p.connects}`);
      assert.equal(p.protocolErrors, 0);
      t.diagnostic('daemon log, peer lines:\n' + d.log.split('\n').filter((l) => l.includes('"peer ')).join('\n'));
    } finally {
      await teardown('vm2');
    }
  });

  // Regression: pier logged a client port's first "peer connected" under its index ("#3") when
  // the frontend answered before add-port had recorded the port's name; reconcile() now records
  // the port before it is made.
  it('the daemon log names the client port in its first "peer connected" line', async () => {
    const sock = `${d.dir}/vm3.sock`;
    // A listening QEMU answers as soon as pier connects; its guest need not boot.
    const vm = new QemuVm(img, { chardev: `socket,id=c0,path=${sock},server=on,wait=off`, mac: '52:54:00:83:00:04', ip: `${NET}.4/24`, peer: TAP_IP });
    vms.push(vm);
    try {
      vm.start();
      await waitFor(() => existsSync(sock), 30_000, 'QEMU to listen', 100);
      const logged = (): string[] => d.log.split('\n').filter((l) => l.includes('vm3.sock') && l.includes('peer connected'));
      d.ok('add-port', 'br0', 'vm3', 'type=vhost-user-client', `path=${sock}`);
      await waitFor(() => logged().length > 0, 15_000, 'a "peer connected" line for vm3.sock in the daemon\'s log', 100);
      for (const l of logged()) assert.equal(JSON.parse(l).port, 'vm3', l);
    } finally {
      await teardown('vm3');
    }
  });
});
