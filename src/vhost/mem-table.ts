// The memory table pier hands a vhost backend as a virtio driver (virtio-user ports), and the
// kernel's limit on it. pier's table is always two regions, whatever the queue count or ring
// size: the packet pool (one memfd) and the port's rings (one memfd holding every ring of every
// queue pair). vhost-net refuses a table with more regions than its module parameter
// max_mem_regions (VHOST_SET_MEM_TABLE fails with E2BIG); the parameter is read-only at run
// time (0444), so the fix is to load the module again with a larger value.
import { readFileSync } from 'node:fs';

/** Regions in the memory table of a virtio-user port: the packet pool and the port's rings. */
export const DRIVER_MEM_REGIONS = 2;

export const MAX_MEM_REGIONS_PARAM = '/sys/module/vhost/parameters/max_mem_regions';
/** The kernel's default for max_mem_regions (drivers/vhost/vhost.c). */
export const MAX_MEM_REGIONS_DEFAULT = 64;

/**
 * vhost's max_mem_regions: the parameter's value, or the kernel default when it cannot be read
 * (vhost not loaded yet: loading it with defaults gives 64). `source` says which.
 */
export function readMaxMemRegions(path = MAX_MEM_REGIONS_PARAM): { value: number; source: 'parameter' | 'default' } {
  let text: string;
  try {
    text = readFileSync(path, 'utf8').trim();
  } catch {
    return { value: MAX_MEM_REGIONS_DEFAULT, source: 'default' };
  }
  if (!/^\d+$/.test(text)) return { value: MAX_MEM_REGIONS_DEFAULT, source: 'default' };
  return { value: Number(text), source: 'parameter' };
}

/**
 * Why a memory table of `regions` regions cannot be handed to vhost-net under a limit of `max`,
 * as a message and its fix; null when it fits.
 */
export function memTableProblem(regions: number, max: number): { message: string; hint: string } | null {
  if (regions <= max) return null;
  return {
    message: `vhost-net accepts at most ${max} memory regions (/sys/module/vhost/parameters/max_mem_regions=${max}); ` +
      `a virtio-user port hands it ${regions} (the packet pool and the port's rings)`,
    hint: `the parameter is fixed while vhost is loaded: reload it with a larger limit, e.g. ` +
      `modprobe -r vhost_net vhost && modprobe vhost max_mem_regions=${MAX_MEM_REGIONS_DEFAULT} && modprobe vhost_net ` +
      `(with vhost built in: boot with vhost.max_mem_regions=${MAX_MEM_REGIONS_DEFAULT}), or use type=tap`,
  };
}
