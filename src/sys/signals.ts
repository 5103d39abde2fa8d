// Two signal handlers in machine code: the SIGBUS guard and the watchdog's wake-up signal.
//
// SIGBUS guard. pier maps memory its peers own (vhost-user regions) into its arena. A file that
// cannot be sealed (a DPDK --no-huge memfd made without MFD_ALLOW_SEALING, a hugetlbfs or tmpfs
// file) can be ftruncate()d by its owner while pier maps it, and pier's next access to a page
// past the new end raises SIGBUS, which by default kills the whole daemon. The guard catches
// SIGBUS faults *inside registered ranges* (every Arena registers its 4 GiB), maps a private zero
// page over the faulting page, records the address and returns: the faulting instruction runs
// again and reads zeros (or writes into a page nobody else sees). The dataplane reads the counter
// after each burst, drops the burst and resets the port whose memory it was (engine.ts).
//
// JavaScript must never run in a signal handler (the fault can happen in the middle of a V8
// builtin, a memmove, with the heap in any state), and koffi callbacks run JavaScript, so the
// handler is a few hundred bytes of x86-64 code using raw `syscall`, nothing from libc. Any other
// SIGBUS (outside the ranges, not a BUS_ADRERR fault, one sent with kill(), or the zero page
// cannot be mapped) puts SIG_DFL back and re-raises SIGBUS for the same thread: the process dies
// of it exactly as without the guard, so a real bug stays visible (and dumps core at the faulting
// instruction). Node and V8 do not handle SIGBUS themselves (V8's wasm trap handler takes SIGSEGV
// only: /proc/self/status SigCgt of a plain node shows no SIGBUS; signals.test.ts checks it).
//
// Wake-up signal (SIGURG): a handler that is a single `ret`, installed without SA_RESTART, so a
// thread blocked in write() on a peer's eventfd whose O_NONBLOCK the peer cleared gets EINTR when
// the main thread's watchdog sends it the signal (peer-fd.ts). SIGURG: Node, libuv and V8 do not
// use it, its default action is to ignore it (a stray one before the handler exists is harmless),
// and the kernel sends it only to the owner of a socket with F_SETOWN, which pier never sets.
//
// The code, assembled once with GNU as (`as --64 guard.s && objcopy -O binary -j .text`):
//
//   sigbus_handler:                        # rdi = signo, rsi = siginfo_t *, rdx = ucontext
//       push    %rbx                       # callee-saved registers we use
//       push    %r12
//       movabs  $DATA, %rbx                # the data page (imm64 patched at load)
//       cmpl    $7, (%rsi)                 # si_signo == SIGBUS
//       jne     .Lpass
//       cmpl    $2, 8(%rsi)                # si_code == BUS_ADRERR (a fault, not kill())
//       jne     .Lpass
//       mov     16(%rsi), %r12             # si_addr
//       mov     8(%rbx), %rcx              # registered ranges
//       lea     64(%rbx), %rdx
//   .Lscan:
//       test    %rcx, %rcx
//       jz      .Lpass
//       cmp     (%rdx), %r12               # start <= addr < end ?
//       jb      .Lnext
//       cmp     8(%rdx), %r12
//       jb      .Lours
//   .Lnext:
//       add     $16, %rdx
//       dec     %rcx
//       jmp     .Lscan
//   .Lours:
//       mov     %r12, %rdi
//       and     $-4096, %rdi
//       mov     $4096, %esi
//       call    .Lzero                     # a private zero page over the faulting 4 KiB page
//       cmp     %rax, %rdi
//       je      .Lrecord
//       mov     %r12, %rdi                 # failed (inside a hugetlb mapping): the 2 MiB block
//       and     $-0x200000, %rdi
//       mov     $0x200000, %esi
//       call    .Lzero
//       cmp     %rax, %rdi
//       jne     .Lpass
//   .Lrecord:
//       mov     $1, %eax
//       lock xadd %rax, (%rbx)             # n = count++
//       and     $63, %eax
//       mov     %r12, 2112(%rbx,%rax,8)    # ring[n % 64] = addr
//       jmp     .Lout
//   .Lpass:                                # not ours: SIG_DFL again, and re-raise for this
//       mov     $13, %eax                  # thread (pending until the handler returns: no
//       mov     $7, %edi                   # SA_NODEFER), so the process dies of SIGBUS
//       lea     32(%rbx), %rsi             # rt_sigaction(SIGBUS, &zeroed kernel sigaction, NULL, 8)
//       xor     %edx, %edx
//       mov     $8, %r10d
//       syscall
//       lock incq 16(%rbx)                 # passed on
//       mov     $39, %eax                  # getpid
//       syscall
//       mov     %rax, %r12
//       mov     $186, %eax                 # gettid
//       syscall
//       mov     %r12, %rdi
//       mov     %rax, %rsi
//       mov     $7, %edx
//       mov     $234, %eax                 # tgkill(pid, tid, SIGBUS)
//       syscall
//   .Lout:
//       pop     %r12
//       pop     %rbx
//       ret
//   .Lzero:                                # mmap(rdi, rsi, PROT_READ|PROT_WRITE,
//       mov     $9, %eax                   #      MAP_PRIVATE|MAP_ANONYMOUS|MAP_FIXED, -1, 0)
//       mov     $3, %edx                   # syscall keeps rdi: the caller compares it with rax
//       mov     $0x32, %r10d
//       mov     $-1, %r8
//       xor     %r9d, %r9d
//       syscall
//       ret
//   wake_handler:                          # offset 0xe7
//       ret
//
// ABI notes: only rbx and r12 of the callee-saved registers are used, and restored; `syscall`
// clobbers rax, rcx and r11 only, all caller-saved. The handler is installed with glibc's
// sigaction(), which sets SA_RESTORER and its own __restore_rt (the rt_sigreturn trampoline the
// kernel needs on x86-64); the struct layout is checked in libc.ts, the result read back here.
// Flags: SA_SIGINFO only (no SA_NODEFER: SIGBUS stays blocked while the handler runs, which the
// re-raise relies on; no SA_ONSTACK: Node sets no alternate stack for its threads).
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import * as c from './libc.ts';

const CODE_HEX =
  '53415448bb8877665544332211833e077574837e0802756e4c8b6610488b4b08' +
  '488d53404885c9745d4c3b2272064c3b620872094883c21048ffc9ebe74c89e7' +
  '4881e700f0ffffbe00100000e8790000004839c774194c89e74881e70000e0ff' +
  'be00002000e8600000004839c77517b801000000f0480fc10383e03f4c89a4c3' +
  '40080000eb40b80d000000bf07000000488d732031d241ba080000000f05f048' +
  'ff4310b8270000000f054989c4b8ba0000000f054c89e74889c6ba07000000b8' +
  'ea0000000f05415c5bc3b809000000ba0300000041ba3200000049c7c0ffffff' +
  'ff4531c90f05c3c3';
const CODE_LEN = 232;
const CODE_SHA256 = '927f1ba130ba3e54b62d6f6dc86928e07f2b93d9e57b92c8c9fb2fd812912831';
/** Where the movabs immediate (the data page address) sits, and what it holds before patching. */
const DATA_IMM = 5;
const PLACEHOLDER = 0x1122334455667788n;
const WAKE_OFFSET = 0xe7;
const PAGE = 4096;

// The data page, shared by every thread of the process.
const D_FAULTS = 0; // u64: faults survived
const D_NRANGES = 8; // u64: ranges the handler scans
const D_PASSED = 16; // u64: SIGBUS handed back to SIG_DFL (the process is about to die)
const D_CLAIMED = 24; // u64: range slots claimed by register (JS only)
const D_DFL = 32; // 32 zero bytes: the kernel's struct sigaction for SIG_DFL
const D_RANGES = 64; // [start, end) pairs
export const MAX_GUARDED_RANGES = 128;
const D_RING = 2112; // addresses of the last 64 faults
/** The ring of recorded fault addresses: fault n (0-based) is in slot n % FAULT_RING. */
export const FAULT_RING = 64;
if (D_DFL + 32 > D_RANGES || D_RANGES + 16 * MAX_GUARDED_RANGES !== D_RING || D_RING + 8 * FAULT_RING > PAGE) throw new Error('signals: data page layout');

export const WAKE_SIGNAL = c.SIGURG;

function template(): Uint8Array {
  const code = Buffer.from(CODE_HEX, 'hex');
  const sum = createHash('sha256').update(code).digest('hex');
  if (code.length !== CODE_LEN || sum !== CODE_SHA256) {
    throw new Error(`signals: the embedded SIGBUS handler is corrupt (${code.length} bytes, sha256 ${sum})`);
  }
  if (new DataView(code.buffer, code.byteOffset).getBigUint64(DATA_IMM, true) !== PLACEHOLDER || code[WAKE_OFFSET] !== 0xc3) {
    throw new Error('signals: the embedded handler does not have its patch point or its wake-up `ret` where expected');
  }
  return code;
}

/** The process's SIGBUS guard: installed once per process, shared by every thread (and isolate). */
export interface SigbusGuard {
  /** Address of the handler (code page) and of the data page. */
  readonly code: number;
  readonly data: number;
  /**
   * [0] holds the low 32 bits of the number of faults survived. `Atomics.load(counter, 0)` is the
   * dataplane's one-load check after each burst.
   */
  readonly counter: Int32Array;
  /** The data page as 64-bit words (exact counts, ranges, the ring of addresses). */
  readonly words: BigInt64Array;
}

let guard: SigbusGuard | undefined;

function readAction(sig: number): { handler: number; flags: number; restorer: number } {
  const old = new Uint8Array(c.SIZEOF_SIGACTION);
  c.check(c.sigaction(sig, null, old), 'sigaction', `query signal ${sig}`);
  const dv = new DataView(old.buffer);
  return { handler: Number(dv.getBigUint64(0, true)), flags: dv.getInt32(c.SIGACTION_FLAGS, true), restorer: Number(dv.getBigUint64(c.SIGACTION_RESTORER, true)) };
}

function setAction(sig: number, handler: number, flags: number): void {
  const act = new Uint8Array(c.SIZEOF_SIGACTION); // empty sa_mask: block only the signal itself
  const dv = new DataView(act.buffer);
  dv.setBigUint64(0, BigInt(handler), true);
  dv.setInt32(c.SIGACTION_FLAGS, flags, true);
  c.check(c.sigaction(sig, act, null), 'sigaction', `signal ${sig}`);
  const got = readAction(sig);
  // glibc's sigaction() must have added its restorer (the kernel returns through it).
  if (got.handler !== handler || (got.flags & flags) !== flags || (got.flags & c.SA_RESTORER) === 0 || got.restorer === 0) {
    throw new Error(`signals: signal ${sig} reads back as handler 0x${got.handler.toString(16)} flags 0x${got.flags.toString(16)} restorer 0x${got.restorer.toString(16)}`);
  }
}

function mapPage(): number {
  const a = Number(c.mmap(0, PAGE, c.PROT_READ | c.PROT_WRITE, c.MAP_PRIVATE | c.MAP_ANONYMOUS, -1, 0));
  if (a === 0 || a >= 2 ** 53) throw new c.SysError('mmap', c.errno(), 'a page for the signal handlers');
  return a;
}

function views(code: number, data: number): SigbusGuard {
  const ab = c.view(data, PAGE);
  return { code, data, counter: new Int32Array(ab, 0, 2), words: new BigInt64Array(ab) };
}

/** Our handler at `addr`? Then the data page address it was patched with, else null. */
function adopt(addr: number, tpl: Uint8Array): number | null {
  // pier's handler starts a page: reading CODE_LEN bytes from there stays inside that page.
  if (addr < PAGE || addr >= 2 ** 53 || addr % PAGE !== 0) return null;
  const have = new Uint8Array(c.view(addr, CODE_LEN)); // a handler's code is mapped and readable
  for (let i = 0; i < CODE_LEN; i++) if ((i < DATA_IMM || i >= DATA_IMM + 8) && have[i] !== tpl[i]) return null;
  return Number(new DataView(have.buffer, have.byteOffset).getBigUint64(DATA_IMM, true));
}

/**
 * Install the SIGBUS guard (idempotent, process-wide: another thread's module instance that
 * installed it is found through the current handler). Throws when SIGBUS already has a handler
 * that is not pier's.
 */
export function sigbusGuard(): SigbusGuard {
  if (guard) return guard;
  const tpl = template();
  const cur = readAction(c.SIGBUS);
  const data = adopt(cur.handler, tpl);
  if (data !== null) return (guard = views(cur.handler, data));
  if (cur.handler !== 0) throw new Error(`SIGBUS already has a handler (0x${cur.handler.toString(16)}) that is not pier's guard`);
  const d = mapPage(); // zero-filled: no ranges, SIG_DFL action
  const code = mapPage();
  const bytes = new Uint8Array(c.view(code, PAGE));
  bytes.set(tpl);
  new DataView(bytes.buffer, bytes.byteOffset).setBigUint64(DATA_IMM, BigInt(d), true);
  c.check(c.mprotect(code, PAGE, c.PROT_READ | c.PROT_EXEC), 'mprotect', 'the signal handler page');
  setAction(c.SIGBUS, code, c.SA_SIGINFO);
  return (guard = views(code, d));
}

/**
 * Guard [start, start + len): a SIGBUS fault there is survived (zero page, counted, recorded).
 * Returns false when the guard cannot be installed or its range table is full.
 */
export function guardRange(start: number, len: number): boolean {
  let g: SigbusGuard;
  try {
    g = sigbusGuard();
  } catch {
    return false;
  }
  const w = g.words;
  const k = Number(Atomics.add(w, D_CLAIMED / 8, 1n));
  if (k >= MAX_GUARDED_RANGES) return false;
  // An empty slot (0, 0) matches nothing, so the end goes last and the count after it.
  const e = D_RANGES / 8 + 2 * k;
  Atomics.store(w, e, BigInt(start));
  Atomics.store(w, e + 1, BigInt(start + len));
  for (let n = Atomics.load(w, D_NRANGES / 8); n < BigInt(k + 1); n = Atomics.load(w, D_NRANGES / 8)) {
    if (Atomics.compareExchange(w, D_NRANGES / 8, n, BigInt(k + 1)) === n) break;
  }
  return true;
}

/** Faults survived since the process started (exact). */
export function faultCount(): number {
  return guard ? Number(Atomics.load(guard.words, D_FAULTS / 8)) : 0;
}

/** Address of fault number n (0-based); valid while faultCount() - n <= FAULT_RING. */
export function faultAddress(n: number): number {
  return guard ? Number(BigInt.asUintN(64, Atomics.load(guard.words, D_RING / 8 + (n % FAULT_RING)))) : 0;
}

export interface GuardStatus {
  installed: boolean;
  ranges: Array<{ start: number; end: number }>;
  faults: number;
  /** SIGBUS signals handed back to SIG_DFL (the process died of each; nonzero only in a core). */
  passedOn: number;
  /** /proc/self/status SigCgt has SIGBUS (the kernel's view of who catches it). */
  caught: boolean;
}

export function guardStatus(): GuardStatus {
  const g = guard;
  const ranges: GuardStatus['ranges'] = [];
  if (g) {
    const n = Number(Atomics.load(g.words, D_NRANGES / 8));
    for (let k = 0; k < n; k++) {
      const s = Number(g.words[D_RANGES / 8 + 2 * k]!);
      const e = Number(g.words[D_RANGES / 8 + 2 * k + 1]!);
      if (e > s) ranges.push({ start: s, end: e });
    }
  }
  return { installed: g !== undefined, ranges, faults: faultCount(), passedOn: g ? Number(g.words[D_PASSED / 8]!) : 0, caught: caughtSignals().has(c.SIGBUS) };
}

/** Signals this process catches, from /proc/self/status (SigCgt). */
export function caughtSignals(): Set<number> {
  const m = /^SigCgt:\s*([0-9a-f]+)$/m.exec(readFileSync('/proc/self/status', 'utf8'));
  const mask = BigInt(`0x${m?.[1] ?? '0'}`);
  const out = new Set<number>();
  for (let s = 1; s <= 64; s++) if ((mask >> BigInt(s - 1)) & 1n) out.add(s);
  return out;
}

/**
 * Install the watchdog's wake-up signal (SIGURG): a handler that only returns, without
 * SA_RESTART, so a syscall it interrupts fails with EINTR. Idempotent. Returns the signal.
 */
export function installWakeSignal(): number {
  const g = sigbusGuard(); // the `ret` lives in the guard's code page
  const target = g.code + WAKE_OFFSET;
  const cur = readAction(WAKE_SIGNAL);
  if (cur.handler === target && (cur.flags & c.SA_RESTART) === 0) return WAKE_SIGNAL;
  // 0 is SIG_DFL, 1 SIG_IGN; anything else is someone else's handler (pier's is at `target`
  // process-wide, whichever thread installed it).
  if (cur.handler > 1) throw new Error(`signal ${WAKE_SIGNAL} (SIGURG) already has a handler (0x${cur.handler.toString(16)}) that is not pier's`);
  setAction(WAKE_SIGNAL, target, 0);
  return WAKE_SIGNAL;
}

/** Send the wake-up signal to one thread of this process (the watchdog's kick). 0 or -errno. */
export function wakeThread(tid: number): number {
  return c.tgkill(c.getpid(), tid, WAKE_SIGNAL) === 0 ? 0 : -c.errno();
}
