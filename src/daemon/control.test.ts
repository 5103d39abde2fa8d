// The control socket's framing, limits, deadlines and schema, against a stub `run` (no root, no
// dataplane). The real daemon behind it: test/control-socket.root.test.ts.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { createConnection, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { type Commands, ControlServer, MAX_ARG_CHARS, MAX_ARGS, parseRequest } from './control.ts';
import { PierError } from './errors.ts';

const COMMANDS: Commands = { 'add-br': ['BRIDGE'], 'add-port': ['BRIDGE', 'PORT', 'OPTION...'], show: ['NAME'], ping: [], big: [] };

function refused(line: string, code: string, message: RegExp): void {
  assert.throws(() => parseRequest(line, COMMANDS), (e: unknown) => {
    assert.ok(e instanceof PierError, String(e));
    assert.equal(e.code, code);
    assert.match(e.message, message);
    assert.ok(e.hint, 'no hint');
    return true;
  });
}

describe('parseRequest', () => {
  test('a well-formed request; args may be left out', () => {
    assert.deepEqual(parseRequest('{"cmd":"add-br","args":["br0"]}', COMMANDS), { cmd: 'add-br', args: ['br0'] });
    assert.deepEqual(parseRequest('{"cmd":"ping"}', COMMANDS), { cmd: 'ping', args: [] });
    assert.deepEqual(parseRequest('{"cmd":"add-port","args":["b","p","type=tap","mtu=9000"]}', COMMANDS).args.length, 4);
  });

  test('malformed JSON and non-objects: EPROTO, naming the problem', () => {
    refused('{"cmd": "show"', 'EPROTO', /the request is not valid JSON: /);
    refused('', 'EPROTO', /empty request line/);
    refused('[1,2]', 'EPROTO', /must be a JSON object, got an array/);
    refused('null', 'EPROTO', /must be a JSON object, got null/);
    refused('"show"', 'EPROTO', /must be a JSON object, got a string/);
  });

  test('a field of the wrong type is named, with the type received', () => {
    refused('{"cmd":"add-br","args":[{}]}', 'EINVAL', /^args\[0\] \(BRIDGE\) must be a string, got an object$/);
    refused('{"cmd":"add-port","args":["b","p",7]}', 'EINVAL', /^args\[2\] \(OPTION\) must be a string, got a number$/);
    refused('{"cmd":"add-port","args":["b","p","x=1","y=2",[]]}', 'EINVAL', /^args\[4\] \(OPTION\) must be a string, got an array$/);
    refused('{"cmd":"show","args":"br0"}', 'EINVAL', /^args must be an array, got a string$/);
    refused('{"cmd":{"x":1}}', 'EINVAL', /^cmd must be a string, got an object$/);
    refused('{"args":[]}', 'EINVAL', /^cmd must be a string, got nothing$/);
    refused('{"cmd":null}', 'EINVAL', /^cmd must be a string, got null$/);
  });

  test('unknown commands keep their message; an unknown command beats bad arguments', () => {
    refused('{"cmd":"frob"}', 'EINVAL', /^unknown command frob$/);
    refused('{"cmd":"frob","args":[{}]}', 'EINVAL', /^unknown command frob$/);
    refused('{"cmd":"toString"}', 'EINVAL', /^unknown command toString$/);
  });

  test('sizes, counts and unknown fields are bounded', () => {
    refused(JSON.stringify({ cmd: 'x'.repeat(65) }), 'EINVAL', /^cmd is 65 characters; at most 64$/);
    refused(JSON.stringify({ cmd: 'add-br', args: ['b'.repeat(MAX_ARG_CHARS + 1)] }), 'EINVAL', new RegExp(`^args\\[0\\] \\(BRIDGE\\) is ${MAX_ARG_CHARS + 1} characters; at most ${MAX_ARG_CHARS}$`));
    refused(JSON.stringify({ cmd: 'add-port', args: Array(MAX_ARGS + 1).fill('a') }), 'EINVAL', new RegExp(`^args has ${MAX_ARGS + 1} elements; at most ${MAX_ARGS}$`));
    refused('{"cmd":"show","argz":[]}', 'EINVAL', /^unknown field 'argz' in the request/);
    refused('{"cmd":"show","args":["a","b"]}', 'EINVAL', /^show takes at most 1 argument \(NAME\), got 2$/);
    refused('{"cmd":"ping","args":["a"]}', 'EINVAL', /^ping takes at most 0 arguments, got 1$/);
  });
});

/** A test client: what it has read, line by line, and whether the daemon closed it. */
class Client {
  readonly sock: Socket;
  lines: string[] = [];
  closed = false;
  private buf = '';
  constructor(path: string) {
    this.sock = createConnection(path);
    this.sock.setEncoding('utf8');
    this.sock.on('error', () => undefined);
    this.sock.on('data', (d: string) => {
      this.buf += d;
      let nl;
      while ((nl = this.buf.indexOf('\n')) >= 0) {
        this.lines.push(this.buf.slice(0, nl));
        this.buf = this.buf.slice(nl + 1);
      }
    });
    this.sock.on('close', () => (this.closed = true));
  }
  replies(): any[] {
    return this.lines.map((l) => JSON.parse(l));
  }
}

async function until(what: string, cond: () => boolean, ms = 5000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for: ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

describe('ControlServer', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'pier-control-'));
  const clients: Client[] = [];
  let runs: string[] = [];
  const log = { debug: () => undefined, warn: () => undefined, error: () => undefined };

  async function server(path: string, extra: { deadlineMs?: number; maxRequestBytes?: number; maxConnections?: number } = {}): Promise<ControlServer> {
    return ControlServer.listen({
      path: join(dir, path), mode: 0o600, commands: COMMANDS, log, ...extra,
      // eslint-disable-next-line @typescript-eslint/require-await -- async: a throw must become the promise's rejection
      run: async (cmd, args) => {
        runs.push(cmd);
        if (cmd === 'big') return 'x'.repeat(256 * 1024);
        if (cmd === 'add-br' && args[0] === 'boom') throw new Error('boom');
        return { cmd, args };
      },
    });
  }
  function client(path: string): Client {
    const c = new Client(join(dir, path));
    clients.push(c);
    return c;
  }

  const s = await server('a.sock', { maxRequestBytes: 1000 });
  after(async () => {
    for (const c of clients) c.sock.destroy();
    await s.close();
    rmSync(dir, { recursive: true, force: true });
  });

  test('pipelined requests, split anywhere, are answered in order', async () => {
    const c = client('a.sock');
    const text = '{"cmd":"ping"}\n{"cmd":"add-br","args":["b1"]}\n{"cmd":"show","args":["é"]}\n';
    for (const b of Buffer.from(text)) c.sock.write(Buffer.from([b])); // one byte at a time, é split too
    await until('3 replies', () => c.lines.length === 3);
    assert.deepEqual(c.replies().map((r) => r.result), [{ cmd: 'ping', args: [] }, { cmd: 'add-br', args: ['b1'] }, { cmd: 'show', args: ['é'] }]);
  });

  test('malformed JSON: an EPROTO reply, and the connection goes on', async () => {
    const c = client('a.sock');
    c.sock.write('{"cmd": \n{"cmd":"ping"}\n');
    await until('2 replies', () => c.lines.length === 2);
    const [bad, good] = c.replies();
    assert.equal(bad.ok, false);
    assert.equal(bad.error.code, 'EPROTO');
    assert.ok(good.ok);
    assert.equal(c.closed, false);
  });

  test('a rejected request never reaches run', async () => {
    runs = [];
    const c = client('a.sock');
    c.sock.write('{"cmd":"add-br","args":[{}]}\n{"cmd":"frob"}\n[]\n');
    await until('3 replies', () => c.lines.length === 3);
    assert.deepEqual(runs, []);
    assert.equal(c.replies()[0].error.message, 'args[0] (BRIDGE) must be a string, got an object');
  });

  test('an error that is not a PierError is EINTERNAL, and the connection goes on', async () => {
    const c = client('a.sock');
    c.sock.write('{"cmd":"add-br","args":["boom"]}\n{"cmd":"ping"}\n');
    await until('2 replies', () => c.lines.length === 2);
    assert.equal(c.replies()[0].error.code, 'EINTERNAL');
    assert.ok(c.replies()[1].ok);
  });

  test('a request over the limit: EMSGSIZE naming the limit, then closed; nothing run', async () => {
    runs = [];
    const c = client('a.sock');
    c.sock.write(`{"cmd":"add-br","args":["${'a'.repeat(2000)}"]}\n`);
    await until('closed', () => c.closed);
    assert.equal(c.replies().length, 1);
    assert.equal(c.replies()[0].error.code, 'EMSGSIZE');
    assert.match(c.replies()[0].error.message, /request over 1000 bytes/);
    assert.deepEqual(runs, []);
  });

  test('a request of exactly the limit is taken', async () => {
    const c = client('a.sock');
    const head = '{"cmd":"show","args":["';
    const tail = '"]}';
    c.sock.write(head + 'n'.repeat(1000 - head.length - tail.length) + tail + '\n');
    await until('reply', () => c.lines.length === 1);
    assert.equal(c.replies()[0].result.args[0].length, 1000 - head.length - tail.length);
  });

  test('a last request without its newline, then the client shuts its side: answered, then closed', async () => {
    const c = client('a.sock');
    c.sock.end('{"cmd":"ping"}');
    await until('closed', () => c.closed);
    assert.equal(c.replies()[0]?.ok, true);
  });

  test('an incomplete request past the deadline: ETIMEDOUT, closed; others are served meanwhile', async () => {
    const t = await server('t.sock', { deadlineMs: 300 });
    try {
      const stale = client('t.sock');
      const idle = client('t.sock');
      stale.sock.write('{"cmd":"pi');
      await until('connected', () => t.connections === 2);
      const start = Date.now();
      const ok = client('t.sock');
      ok.sock.write('{"cmd":"ping"}\n');
      await until('answer', () => ok.lines.length === 1);
      assert.ok(Date.now() - start < 1000);
      // Trickling bytes does not reset the clock.
      const trickle = setInterval(() => stale.sock.write(' '), 50);
      await until('stale and idle closed', () => stale.closed && idle.closed, 3000);
      clearInterval(trickle);
      const waited = Date.now() - start;
      assert.ok(waited >= 250 && waited < 1500, `closed after ${waited} ms`);
      assert.match(stale.replies()[0].error.message, /the request was not finished within 0.3 s/);
      assert.equal(stale.replies()[0].error.code, 'ETIMEDOUT');
      assert.match(idle.replies()[0].error.message, /no request within 0.3 s/);
    } finally {
      await t.close();
    }
  });

  test('a client that never reads its replies: the daemon stops taking its requests, then closes it', async () => {
    const t = await server('b.sock', { deadlineMs: 500 });
    try {
      runs = [];
      const c = client('b.sock');
      c.sock.pause(); // never reads
      const many = '{"cmd":"big"}\n'.repeat(10_000);
      c.sock.write(many);
      await until('connected', () => t.connections === 1);
      // A paused client does not see the close: the server's count does.
      await until('closed by the server', () => t.connections === 0, 5000);
      // Each reply is 256 KiB: only as many run as the socket buffers hold, not 10000.
      assert.ok(runs.length > 0 && runs.length < 50, `${runs.length} requests ran`);
    } finally {
      await t.close();
    }
  });

  test('over the connection limit: EBUSY, closed; the limit frees up when clients leave', async () => {
    const t = await server('c.sock', { maxConnections: 2 });
    try {
      const a = client('c.sock');
      const b = client('c.sock');
      await until('2 connected', () => t.connections === 2);
      const c = client('c.sock');
      await until('refused', () => c.closed);
      assert.equal(c.replies()[0].error.code, 'EBUSY');
      a.sock.destroy();
      await until('1 left', () => t.connections === 1);
      const d = client('c.sock');
      d.sock.write('{"cmd":"ping"}\n');
      await until('answer', () => d.lines.length === 1);
      assert.ok(d.replies()[0].ok);
      b.sock.destroy();
    } finally {
      await t.close();
    }
  });

  test('close() does not wait for idle clients', async () => {
    const t = await server('d.sock');
    const c = client('d.sock');
    await until('connected', () => t.connections === 1);
    const start = Date.now();
    await t.close();
    assert.ok(Date.now() - start < 1000);
    await until('client closed', () => c.closed);
  });
});
