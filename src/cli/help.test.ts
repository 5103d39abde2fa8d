// `pier add-port --help` and `pier set-port --help` against the kinds' schemas: every key a kind
// takes is listed on its lines, every key it changes live on set-port's, so a new key cannot be
// left out of the help.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { COMMON_KEYS, optionKeys } from '../ports/parse.ts';
import { KINDS, loadSchemas } from '../ports/registry.ts';

const root = fileURLToPath(new URL('../..', import.meta.url));

function help(cmd: string): string {
  return execFileSync(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', cmd, '--help'], { cwd: root, encoding: 'utf8' });
}

/** The line that starts with `head` and the indented lines that go on from it. */
function block(text: string, head: RegExp): string {
  const lines = text.split('\n');
  const i = lines.findIndex((l) => head.test(l));
  assert.ok(i >= 0, `no line ${head} in:\n${text}`);
  let j = i + 1;
  while (j < lines.length && lines[j]!.startsWith('      ')) j++;
  return lines.slice(i, j).join('\n');
}

const typeLine = (type: string): RegExp => new RegExp(`^ {2}type=(\\S*\\|)?${type}(\\||\\s|:)`);

describe('pier add-port and set-port --help', () => {
  before(loadSchemas);

  test('add-port lists every key of every kind, and the keys every kind has', () => {
    const text = help('add-port');
    for (const k of KINDS) {
      for (const type of k.types) {
        const own = block(text, typeLine(type));
        for (const key of optionKeys(type).filter((x) => x !== 'type' && !(COMMON_KEYS as readonly string[]).includes(x))) {
          assert.ok(own.includes(` ${key}=`) || own.includes(`[${key}=`), `${type}: ${key}= missing from:\n${own}`);
        }
      }
    }
    const common = block(text, /^ {2}every kind:/);
    for (const key of COMMON_KEYS) assert.ok(common.includes(`[${key}=`), `${key}= missing from:\n${common}`);
    for (const line of text.split('\n')) assert.ok(line.length <= 80, `over 80 columns: ${line}`);
  });

  test('set-port lists what each kind changes live, and the keys every kind changes live', () => {
    const text = help('set-port');
    for (const k of KINDS) {
      if (k.live.length === 0) {
        assert.match(text, new RegExp(`--recreate .*type=${k.types[0]}`));
        continue;
      }
      const own = block(text, typeLine(k.types[0]!));
      for (const key of k.live) assert.ok(own.includes(` ${key}=`), `${k.types[0]}: ${key}= missing from:\n${own}`);
    }
    const common = block(text, /^ {2}every kind:/);
    for (const key of COMMON_KEYS) assert.ok(common.includes(` ${key}=`), `${key}= missing from:\n${common}`);
  });
});
