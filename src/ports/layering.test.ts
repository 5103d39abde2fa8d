// The layering docs/design/ports.md promises, checked on the source tree: the layers below the
// ports never import a port; outside src/ports nothing names a kind's folder (the registry is
// the way in); and every kind in the registry has the five files of a kind folder. Adding a
// kind is then one folder and one registry line, and this test says so when it is not.
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { describe, test } from 'node:test';
import { KINDS } from './registry.ts';

const SRC = join(import.meta.dirname, '..');

function files(dir: string): string[] {
  return readdirSync(dir).flatMap((f) => {
    const p = join(dir, f);
    return statSync(p).isDirectory() ? files(p) : /\.(ts|mjs)$/.test(f) ? [p] : [];
  });
}

/** Every module specifier a file imports (static and dynamic), resolved to a path under src/. */
function imports(file: string): string[] {
  const text = readFileSync(file, 'utf8');
  const out: string[] = [];
  for (const m of text.matchAll(/(?:from\s+|import\s*\()\s*'(\.{1,2}\/[^']+)'/g)) out.push(relative(SRC, join(file, '..', m[1]!)));
  return out;
}

const BELOW = ['sys', 'memory', 'virtio', 'vhost', 'dataplane'];
const KIND_DIRS = readdirSync(join(SRC, 'ports')).filter((d) => statSync(join(SRC, 'ports', d)).isDirectory());

describe('layering of port kinds', () => {
  test('a client command renders views without loading zod: the registry and the views import no schema', () => {
    const seen = new Set<string>();
    const visit = (rel: string): void => {
      if (seen.has(rel)) return;
      seen.add(rel);
      const text = readFileSync(join(SRC, rel), 'utf8');
      assert.ok(!/^import [^;]*from 'zod'/m.test(text) || /^import type/m.test(text.match(/^import [^;]*from 'zod'.*$/m)?.[0] ?? ''), `${rel} imports zod`);
      // static value imports only: `import type` and dynamic import() are not loaded with it
      for (const m of text.matchAll(/^import (?!type )[^;]*?from '(\.{1,2}\/[^']+)'/gm)) visit(relative(SRC, join(SRC, rel, '..', m[1]!)));
    };
    visit('cli/format.ts');
    assert.ok(seen.has('ports/registry.ts'));
  });

  test('nothing below src/ports imports a port', () => {
    const bad: string[] = [];
    for (const layer of BELOW) {
      for (const f of files(join(SRC, layer))) {
        if (f.endsWith('.test.ts')) continue;
        for (const i of imports(f)) if (i.startsWith('ports/')) bad.push(`${relative(SRC, f)} -> ${i}`);
      }
    }
    assert.deepEqual(bad, []);
  });

  test('outside src/ports, nothing names a kind folder: the registry is the way in', () => {
    const bad: string[] = [];
    for (const f of files(SRC)) {
      if (relative(SRC, f).startsWith('ports/') || f.endsWith('.test.ts')) continue;
      for (const i of imports(f)) if (KIND_DIRS.some((k) => i.startsWith(`ports/${k}/`))) bad.push(`${relative(SRC, f)} -> ${i}`);
    }
    assert.deepEqual(bad, []);
  });

  test('every kind folder is in the registry and has options, control, dataplane, view and index', () => {
    assert.equal(KINDS.length, KIND_DIRS.length, `folders ${KIND_DIRS.join(', ')}`);
    for (const k of KIND_DIRS) {
      for (const f of ['options.ts', 'control.ts', 'dataplane.ts', 'index.ts']) assert.ok(readdirSync(join(SRC, 'ports', k)).includes(f), `${k}/${f}`);
    }
  });

  test('each kind loads its two halves and its schema knows its types', async () => {
    for (const k of KINDS) {
      const c = await k.control();
      const d = await k.dataplane();
      assert.equal(typeof c.realize, 'function');
      assert.equal(typeof c.update, 'function');
      assert.equal(typeof d.create, 'function');
      const schema = await k.options();
      for (const key of k.live) assert.ok(key in (schema as unknown as { shape: object }).shape, `${k.types[0]}: live key ${key} is an option`);
    }
  });
});
