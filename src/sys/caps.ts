// Privilege checks, read from /proc/self/status.
import { readFileSync } from 'node:fs';

const CAP_NET_ADMIN = 12;
const CAP_SYS_ADMIN = 21; // setns into another network namespace

function effectiveCaps(): bigint {
  const m = /^CapEff:\s*([0-9a-f]+)$/m.exec(readFileSync('/proc/self/status', 'utf8'));
  return m?.[1] ? BigInt('0x' + m[1]) : 0n;
}

export function hasCapability(cap: number): boolean {
  return (effectiveCaps() & (1n << BigInt(cap))) !== 0n;
}

export function hasNetAdmin(): boolean {
  return hasCapability(CAP_NET_ADMIN);
}

export function hasSysAdmin(): boolean {
  return hasCapability(CAP_SYS_ADMIN);
}
