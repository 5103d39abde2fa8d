import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { DRIVER_MEM_REGIONS, MAX_MEM_REGIONS_DEFAULT, memTableProblem, readMaxMemRegions } from './mem-table.ts';

describe('vhost-net max_mem_regions', () => {
  test('pier\'s table (pool + rings) fits the default and any limit of 2 or more', () => {
    assert.equal(DRIVER_MEM_REGIONS, 2);
    for (const max of [2, 3, 8, 64, 509, 65535]) assert.equal(memTableProblem(DRIVER_MEM_REGIONS, max), null, `max ${max}`);
  });

  test('a smaller limit is refused with the parameter named and the way to raise it', () => {
    for (const max of [0, 1]) {
      const p = memTableProblem(DRIVER_MEM_REGIONS, max);
      assert.ok(p);
      assert.match(p.message, new RegExp(`at most ${max} memory regions \\(/sys/module/vhost/parameters/max_mem_regions=${max}\\)`));
      assert.match(p.message, /hands it 2 \(the packet pool and the port's rings\)/);
      assert.match(p.hint, /modprobe -r vhost_net vhost && modprobe vhost max_mem_regions=64 && modprobe vhost_net/);
      assert.match(p.hint, /vhost\.max_mem_regions=64/);
      assert.match(p.hint, /type=tap/);
    }
  });

  test('reads the parameter; the kernel default when it is missing or not a number', () => {
    const dir = mkdtempSync(join(tmpdir(), 'pier-memtab-'));
    try {
      const f = join(dir, 'max_mem_regions');
      writeFileSync(f, '1\n');
      assert.deepEqual(readMaxMemRegions(f), { value: 1, source: 'parameter' });
      writeFileSync(f, '509\n');
      assert.deepEqual(readMaxMemRegions(f), { value: 509, source: 'parameter' });
      writeFileSync(f, 'garbage');
      assert.deepEqual(readMaxMemRegions(f), { value: MAX_MEM_REGIONS_DEFAULT, source: 'default' });
      assert.deepEqual(readMaxMemRegions(join(dir, 'absent')), { value: 64, source: 'default' });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
