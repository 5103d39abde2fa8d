// deploy/: the Kubernetes manifests checked offline against the Kubernetes schemas
// (kubernetes-models: its JSON-schema validators for types, required fields, enums and formats,
// and its TypeScript interfaces for fields that do not exist, which the validators let through),
// the NetworkAttachmentDefinition against its CRD's schema, the conflists against what pier-cni
// reads, the DaemonSet's design (privileges, mounts, probes) against what the README says; and
// deploy/install-cni.sh run against a fake host root and a fake daemon socket: the conflist
// appears only once the daemon answers, goes when it stops answering and on SIGTERM, and the
// pier-cni shim it writes runs node through the tree's own loader. No root needed.
import assert from 'node:assert/strict';
import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { after, before, describe, it } from 'node:test';
import ts from 'typescript';
import { parseAllDocuments } from 'yaml';
import { DaemonSet } from 'kubernetes-models/apps/v1/DaemonSet';
import { ConfigMap } from 'kubernetes-models/v1/ConfigMap';
import { Namespace } from 'kubernetes-models/v1/Namespace';
import { ServiceAccount } from 'kubernetes-models/v1/ServiceAccount';
import { ROOT, waitFor } from './helpers.ts';

const DEPLOY = join(ROOT, 'deploy');
const K8S = join(DEPLOY, 'kubernetes');
const INSTALL = join(DEPLOY, 'install-cni.sh');
const BUILD_TREE = join(DEPLOY, 'build-tree.sh');

interface Doc { file: string; index: number; obj: any }

/** Every non-empty document of every deploy/kubernetes/*.yaml, parse errors (duplicate keys too) failing. */
function loadManifests(): Doc[] {
  const docs: Doc[] = [];
  for (const file of readdirSync(K8S).filter((f) => f.endsWith('.yaml')).sort()) {
    parseAllDocuments(readFileSync(join(K8S, file), 'utf8')).forEach((d, index) => {
      if ('errors' in d && d.errors.length > 0) throw new Error(`${file} document ${index}: ${d.errors.map((e) => e.message).join('; ')}`);
      const obj = d.toJS() as unknown;
      if (obj !== null && obj !== undefined) docs.push({ file, index, obj });
    });
  }
  return docs;
}

/** The kinds with a kubernetes-models schema: the validating class and the interface (module, name). */
const MODELS: Record<string, { model: new (o: any) => { validate(): void }; module: string; iface: string }> = {
  'v1/Namespace': { model: Namespace, module: 'kubernetes-models/v1/Namespace', iface: 'INamespace' },
  'v1/ServiceAccount': { model: ServiceAccount, module: 'kubernetes-models/v1/ServiceAccount', iface: 'IServiceAccount' },
  'v1/ConfigMap': { model: ConfigMap, module: 'kubernetes-models/v1/ConfigMap', iface: 'IConfigMap' },
  'apps/v1/DaemonSet': { model: DaemonSet, module: 'kubernetes-models/apps/v1/DaemonSet', iface: 'IDaemonSet' },
};
const NAD = 'k8s.cni.cncf.io/v1/NetworkAttachmentDefinition';
const keyOf = (o: any): string => `${o.apiVersion}/${o.kind}`;
const where = (d: Doc): string => `${d.file} #${d.index} (${d.obj.kind} ${d.obj.metadata?.name})`;

/**
 * The documents as object literals typed with kubernetes-models' interfaces, type-checked: an
 * object literal may not have a property its type lacks (at any depth), so a misspelt field
 * (mountPropogation) fails here though the JSON-schema validators accept it. Returns the errors,
 * each with the document's label and the offending line.
 */
function typeCheck(entries: Array<{ label: string; obj: any }>): string[] {
  const file = join(ROOT, 'test', '.k8s-manifests-typecheck.ts');
  const used = new Set(entries.map((e) => keyOf(e.obj)));
  let text = [...used].map((k) => `import type { ${MODELS[k]!.iface} } from '${MODELS[k]!.module}';\n`).join('');
  const starts: Array<{ line: number; label: string }> = [];
  entries.forEach((e, i) => {
    starts.push({ line: text.split('\n').length - 1, label: e.label });
    text += `export const doc${i}: ${MODELS[keyOf(e.obj)]!.iface} = ${JSON.stringify(e.obj, null, 2)};\n`;
  });
  const options: ts.CompilerOptions = {
    strict: true, noEmit: true, skipLibCheck: true, types: [],
    target: ts.ScriptTarget.ES2022, module: ts.ModuleKind.NodeNext, moduleResolution: ts.ModuleResolutionKind.NodeNext,
  };
  const host = ts.createCompilerHost(options);
  const getSourceFile = host.getSourceFile.bind(host);
  const fileExists = host.fileExists.bind(host);
  const readFile = host.readFile.bind(host);
  host.getSourceFile = (name, lang, ...rest) => (name === file ? ts.createSourceFile(name, text, lang) : getSourceFile(name, lang, ...rest));
  host.fileExists = (name) => name === file || fileExists(name);
  host.readFile = (name) => (name === file ? text : readFile(name));
  const program = ts.createProgram([file], options, host);
  const sf = program.getSourceFile(file)!;
  const lines = text.split('\n');
  return [...program.getSyntacticDiagnostics(sf), ...program.getSemanticDiagnostics(sf)].map((d) => {
    const line = d.start === undefined ? 0 : sf.getLineAndCharacterOfPosition(d.start).line;
    const label = starts.filter((s) => s.line <= line).pop()?.label ?? 'imports';
    return `${label}: ${ts.flattenDiagnosticMessageText(d.messageText, ' ')} (at: ${lines[line]?.trim()})`;
  });
}

const CNI_VERSIONS = ['0.4.0', '1.0.0', '1.1.0'];
const CNI_NAME_RE = /^[a-zA-Z0-9][a-zA-Z0-9_.-]*$/;
/** Keys of pier-cni's network configuration (docs/design/cni.md, issue 10) and the spec's own. */
const PIER_CNI_KEYS = new Set(['cniVersion', 'name', 'type', 'bridge', 'socket', 'portType', 'mtu', 'mac', 'isGateway', 'ipMasq',
  'queues', 'offloads', 'queue-size', 'socketDir', 'ipam', 'dns', 'capabilities', 'args']);

/** A conflist (or a single conf) for pier-cni: its pier-cni plugin configs, each with the list's name and version, as a runtime passes them. */
function pierCniConfs(text: string, at: string): Array<Record<string, unknown>> {
  let c: any;
  try {
    c = JSON.parse(text);
  } catch (e) {
    throw new Error(`${at}: not JSON: ${(e as Error).message}`, { cause: e });
  }
  assert.ok(CNI_VERSIONS.includes(c.cniVersion), `${at}: cniVersion ${c.cniVersion} is not one pier-cni supports (${CNI_VERSIONS.join(', ')})`);
  assert.match(String(c.name), CNI_NAME_RE, `${at}: name`);
  const plugins: any[] = c.plugins === undefined ? [c] : c.plugins;
  assert.ok(Array.isArray(plugins) && plugins.length > 0, `${at}: plugins is not a non-empty list`);
  const ours = plugins.filter((p) => p?.type === 'pier-cni');
  assert.equal(ours.length, 1, `${at}: one plugin of type pier-cni`);
  return ours.map((p) => {
    const conf = c.plugins === undefined ? { ...p } : { cniVersion: c.cniVersion, name: c.name, ...p };
    for (const k of Object.keys(p)) if (c.plugins !== undefined || !['cniVersion', 'name'].includes(k)) assert.ok(PIER_CNI_KEYS.has(k), `${at}: pier-cni has no key ${k}`);
    const ipam: any = conf.ipam;
    assert.equal(typeof ipam?.type, 'string', `${at}: ipam.type`);
    if (conf.socket !== undefined) assert.match(String(conf.socket), /^\/.{1,106}$/, `${at}: socket is an absolute path of at most 107 bytes`);
    return conf;
  });
}

/** The issue's example network configuration (issue 10: "keep these names and keys"). */
const EXAMPLE_CONFLIST = {
  cniVersion: '1.1.0', name: 'pier', plugins: [{
    type: 'pier-cni', bridge: 'br0', socket: '/run/pier/pier.sock', portType: 'tap', mtu: 1500, isGateway: true, ipMasq: true,
    ipam: { type: 'host-local', ranges: [[{ subnet: '10.88.0.0/16', gateway: '10.88.0.1' }]], routes: [{ dst: '0.0.0.0/0' }] },
  }],
};

describe('deploy/kubernetes manifests', () => {
  const docs = loadManifests();
  const find = (key: string): Doc[] => docs.filter((d) => keyOf(d.obj) === key);
  const daemonSet = (): any => find('apps/v1/DaemonSet')[0]!.obj;
  const container = (name: string): any => daemonSet().spec.template.spec.containers.find((c: any) => c.name === name);

  it('has the documents: Namespace, ServiceAccount, ConfigMap, DaemonSet, and the NetworkAttachmentDefinition', () => {
    assert.deepEqual(docs.map((d) => `${d.file}:${d.obj.kind}`), [
      'network-attachment-definition.yaml:NetworkAttachmentDefinition',
      'pier.yaml:Namespace', 'pier.yaml:ServiceAccount', 'pier.yaml:ConfigMap', 'pier.yaml:DaemonSet',
    ]);
    for (const d of docs) assert.ok(MODELS[keyOf(d.obj)] ?? keyOf(d.obj) === NAD, `${where(d)}: no schema to check ${keyOf(d.obj)} against`);
  });

  it('every document passes its Kubernetes schema (kubernetes-models validate())', () => {
    for (const d of docs.filter((x) => keyOf(x.obj) !== NAD)) {
      assert.doesNotThrow(() => new MODELS[keyOf(d.obj)]!.model(d.obj).validate(), (e: Error) => `${where(d)}: ${e.message}`);
    }
  });

  it('no document has a field its Kubernetes type lacks (kubernetes-models\' interfaces, type-checked)', () => {
    const entries = docs.filter((d) => keyOf(d.obj) !== NAD).map((d) => ({ label: where(d), obj: d.obj }));
    // The check itself is checked: a misspelt field in a copy of the DaemonSet must be caught.
    const mutant = structuredClone(daemonSet());
    mutant.spec.template.spec.containers[0].volumeMounts[0].mountPropogation = 'HostToContainer';
    const errors = typeCheck([...entries, { label: 'mutant', obj: mutant }]);
    assert.deepEqual(errors.filter((e) => !e.startsWith('mutant:')), []);
    assert.equal(errors.length, 1, `the misspelt field is caught once: ${errors.join('\n')}`);
    assert.match(errors[0]!, /mountPropogation/);
  });

  it('the NetworkAttachmentDefinition matches its CRD (k8s.cni.cncf.io/v1: spec.config, a JSON string) and configures a vhost-user network', () => {
    const nads = find(NAD);
    assert.equal(nads.length, 1);
    for (const d of nads) {
      const o = d.obj;
      assert.deepEqual(Object.keys(o).sort(), ['apiVersion', 'kind', 'metadata', 'spec'], `${where(d)}: top-level fields`);
      assert.match(o.metadata.name, /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/, `${where(d)}: metadata.name is a DNS-1123 subdomain`);
      assert.ok(o.metadata.name.length <= 253);
      if (o.metadata.namespace !== undefined) assert.match(o.metadata.namespace, /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/, `${where(d)}: metadata.namespace`);
      // metadata as any object's: checked with a ConfigMap around it.
      assert.doesNotThrow(() => new ConfigMap({ metadata: o.metadata }).validate());
      assert.deepEqual(Object.keys(o.spec), ['config'], `${where(d)}: spec has config only`);
      assert.equal(typeof o.spec.config, 'string', `${where(d)}: spec.config is a string`);
      const [conf] = pierCniConfs(o.spec.config, `${where(d)} spec.config`);
      assert.equal(conf!.name, o.metadata.name, 'the network is named after the attachment definition');
      assert.equal(conf!.portType, 'vhost-user');
      assert.match(String(conf!.socketDir), /^\/.{1,79}$/, 'socketDir: an absolute path of at most 80 bytes');
      assert.deepEqual(conf!.capabilities, { CNIDeviceInfoFile: true }, 'Multus passes the device-info file to a plugin that declares it');
    }
  });

  it('the ConfigMap\'s conflist is the issue\'s example network configuration, for pier-cni', () => {
    const cm = find('v1/ConfigMap')[0]!.obj;
    assert.deepEqual(Object.keys(cm.data), ['10-pier.conflist']);
    const text = cm.data['10-pier.conflist'];
    pierCniConfs(text, 'ConfigMap 10-pier.conflist');
    assert.deepEqual(JSON.parse(text), EXAMPLE_CONFLIST);
  });

  it('the conflists pass pier-cni\'s own configuration parser (src/cni/config.cts)', async (t) => {
    const parser = join(ROOT, 'src', 'cni', 'config.cts');
    if (!existsSync(parser)) {
      t.skip('src/cni/config.cts is not there (yet): checked against the keys of docs/design/cni.md only');
      return;
    }
    const { parseConfig } = await import(pathToFileURL(parser).href) as { parseConfig: (text: string) => Record<string, unknown> };
    const texts = [find('v1/ConfigMap')[0]!.obj.data['10-pier.conflist'], find(NAD)[0]!.obj.spec.config] as string[];
    for (const text of texts) {
      for (const conf of pierCniConfs(text, 'conflist')) {
        const parsed = parseConfig(JSON.stringify(conf));
        assert.equal(parsed.name, conf.name);
        assert.equal(parsed.portType, conf.portType);
      }
    }
  });

  it('the DaemonSet: every node, host network, two capabilities and no more, not privileged, one node at a time', () => {
    const ds = daemonSet();
    const pod = ds.spec.template.spec;
    assert.equal(ds.metadata.namespace, 'pier');
    assert.deepEqual(ds.spec.selector.matchLabels, Object.fromEntries(Object.entries(ds.spec.template.metadata.labels).filter(([k]) => k in ds.spec.selector.matchLabels)));
    assert.deepEqual(ds.spec.updateStrategy, { type: 'RollingUpdate', rollingUpdate: { maxUnavailable: 1 } });
    assert.equal(pod.hostNetwork, true);
    assert.equal(pod.hostPID, undefined, 'no hostPID: CNI hands netns paths, not PIDs');
    assert.equal(pod.hostIPC, undefined);
    assert.deepEqual(pod.tolerations, [{ operator: 'Exists' }], 'runs on every node, NotReady ones first of all');
    assert.equal(pod.automountServiceAccountToken, false);
    const sa = find('v1/ServiceAccount')[0]!.obj;
    assert.equal(pod.serviceAccountName, sa.metadata.name);
    assert.equal(sa.metadata.namespace, ds.metadata.namespace);
    assert.equal(find('v1/Namespace')[0]!.obj.metadata.name, ds.metadata.namespace);

    const daemon = container('daemon');
    assert.equal(daemon.securityContext.privileged, false);
    assert.deepEqual(daemon.securityContext.capabilities, { drop: ['ALL'], add: ['NET_ADMIN', 'SYS_ADMIN'] });
    assert.equal(daemon.securityContext.readOnlyRootFilesystem, true);
    const install = container('install-cni');
    assert.equal(install.securityContext.privileged, false);
    assert.deepEqual(install.securityContext.capabilities, { drop: ['ALL'] });
    assert.equal(install.securityContext.allowPrivilegeEscalation, false);
    assert.equal(pod.initContainers, undefined, 'install-cni is a container: it must outlive the start to remove the conflist');
    for (const c of [daemon, install]) assert.equal(c.image, daemon.image, 'one image');
    assert.equal(daemon.resources.limits.cpu, undefined, 'no CPU limit on the dataplane');
    for (const probe of ['startupProbe', 'readinessProbe', 'livenessProbe']) {
      assert.deepEqual(daemon[probe].exec.command, ['/usr/local/bin/install-cni.sh', 'ping'], `${probe}: pings the control socket`);
    }
  });

  it('the DaemonSet\'s volumes: state and sockets on host paths, netns with HostToContainer, the tun device, the conflist from the ConfigMap', () => {
    const ds = daemonSet();
    const pod = ds.spec.template.spec;
    const volumes = new Map<string, any>(pod.volumes.map((v: any) => [v.name, v]));
    const mounts = (c: any): Map<string, any> => new Map(c.volumeMounts.map((m: any) => [m.mountPath, m]));
    const host = (c: any, path: string): string | undefined => volumes.get(mounts(c).get(path)?.name)?.hostPath?.path;
    const used = new Set<string>();
    for (const c of pod.containers) for (const m of c.volumeMounts) {
      assert.ok(volumes.has(m.name), `${c.name}: volume ${m.name} is defined`);
      used.add(m.name);
    }
    assert.deepEqual([...volumes.keys()].filter((v) => !used.has(v)), [], 'every volume is mounted');

    const daemon = container('daemon');
    assert.equal(host(daemon, '/var/lib/pier'), '/var/lib/pier');
    assert.equal(host(daemon, '/run/pier'), '/run/pier');
    assert.equal(host(daemon, '/var/run/netns'), '/var/run/netns');
    assert.equal(mounts(daemon).get('/var/run/netns').mountPropagation, 'HostToContainer');
    assert.equal(host(daemon, '/dev/net/tun'), '/dev/net/tun');
    assert.equal(volumes.get(mounts(daemon).get('/dev/net/tun').name).hostPath.type, 'CharDevice');
    // The daemon runs IPAM DEL itself (GC, reaping): the runtime's plugins and host-local's leases, at the host's paths.
    assert.equal(host(daemon, '/opt/cni/bin'), '/opt/cni/bin');
    assert.equal(mounts(daemon).get('/opt/cni/bin').readOnly, true);
    assert.equal(host(daemon, '/var/lib/cni/networks'), '/var/lib/cni/networks');
    assert.notEqual(mounts(daemon).get('/var/lib/cni/networks').readOnly, true, 'host-local writes its leases and lock there');
    const cm0 = JSON.parse(find('v1/ConfigMap')[0]!.obj.data['10-pier.conflist']);
    assert.equal(cm0.plugins[0].ipam.dataDir, undefined, 'the conflist\'s host-local keeps leases under /var/lib/cni/networks, which the daemon mounts');
    const args: string[] = daemon.args;
    const socket = args[args.indexOf('--socket') + 1];
    assert.equal(socket, '/run/pier/pier.sock');
    assert.equal(args[args.indexOf('--state-dir') + 1], '/var/lib/pier');

    const install = container('install-cni');
    const env = Object.fromEntries(install.env.map((e: any) => [e.name, e.value]));
    const hostRoot: string = env.HOST_ROOT;
    assert.equal(host(install, `${hostRoot}/opt/cni/bin`), '/opt/cni/bin');
    assert.equal(host(install, `${hostRoot}/etc/cni/net.d`), '/etc/cni/net.d');
    assert.equal(host(install, `${hostRoot}/opt/pier`), '/opt/pier');
    assert.equal(host(install, '/run/pier'), '/run/pier', 'install-cni pings the daemon\'s socket');
    assert.equal(env.PIER_SOCKET, socket);
    // The conflist file install-cni reads is the ConfigMap's key, and names the socket the daemon listens on (the same host path).
    const cm = find('v1/ConfigMap')[0]!.obj;
    const cmMount = [...mounts(install).values()].find((m) => volumes.get(m.name).configMap);
    assert.equal(volumes.get(cmMount.name).configMap.name, cm.metadata.name);
    assert.equal(cm.metadata.namespace, ds.metadata.namespace);
    assert.equal(env.PIER_CNI_CONFLIST, `${cmMount.mountPath}/10-pier.conflist`);
    assert.equal(JSON.parse(cm.data['10-pier.conflist']).plugins[0].socket, socket);
  });
});

describe('deploy/Containerfile', () => {
  const text = readFileSync(join(DEPLOY, 'Containerfile'), 'utf8');
  const lines = text.split('\n').filter((l) => !l.startsWith('#'));

  it('builds on node:20-bookworm-slim and runs `pier daemon`', () => {
    const froms = lines.filter((l) => l.startsWith('FROM ')).map((l) => l.split(/\s+/)[1]);
    assert.ok(froms.length >= 1 && froms.every((f) => f === 'node:20-bookworm-slim'), `FROM lines: ${froms.join(', ')}`);
    assert.match(text, /^ENTRYPOINT \["\/opt\/pier\/bin\/pier", "daemon"\]$/m);
    assert.match(text, /apt-get install[^\n]*iproute2 nftables/);
    assert.match(text, /npm ci --omit=dev/);
  });

  it('copies only files that exist, each let through by Containerfile.dockerignore', () => {
    const allowed = readFileSync(join(DEPLOY, 'Containerfile.dockerignore'), 'utf8').split('\n').filter((l) => l.startsWith('!')).map((l) => l.slice(1));
    const sources = lines.filter((l) => l.startsWith('COPY ') && !l.includes('--from=')).flatMap((l) => l.split(/\s+/).slice(1, -1));
    assert.ok(sources.length > 0);
    for (const s of sources) {
      assert.ok(existsSync(join(ROOT, s)), `COPY ${s}: exists`);
      assert.ok(allowed.includes(s), `COPY ${s}: not excluded from the build context`);
    }
  });
});

describe('deploy/*.sh', () => {
  it('are shellcheck-clean', (t) => {
    const scripts = readdirSync(DEPLOY).filter((f) => f.endsWith('.sh')).map((f) => join(DEPLOY, f));
    const r = spawnSync('shellcheck', scripts, { encoding: 'utf8' });
    if (r.error) {
      t.skip('shellcheck is not installed (apt-get install shellcheck)');
      return;
    }
    assert.equal(r.status, 0, r.stdout + r.stderr);
  });
});

/** A fake pier daemon: a unix socket that answers each request line as `mode` says, and records the lines. */
class FakeDaemon {
  mode: 'ok' | 'refuse' | 'silent' = 'ok';
  readonly lines: string[] = [];
  connections = 0;
  private readonly server: Server;
  private readonly sockets = new Set<Socket>();

  constructor(readonly path: string) {
    this.server = createServer((s) => {
      this.connections++;
      this.sockets.add(s);
      s.on('close', () => this.sockets.delete(s));
      s.on('error', () => undefined);
      let buf = '';
      s.setEncoding('utf8');
      s.on('data', (d: string) => {
        buf += d;
        for (let nl = buf.indexOf('\n'); nl >= 0; nl = buf.indexOf('\n')) {
          this.lines.push(buf.slice(0, nl));
          buf = buf.slice(nl + 1);
          if (this.mode === 'ok') s.write('{"ok":true,"result":{"version":"0.1.0","pid":1}}\n');
          if (this.mode === 'refuse') s.write('{"ok":false,"error":{"code":"EBUSY","message":"starting"}}\n');
        }
      });
    });
  }

  async listen(): Promise<void> {
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(this.path, resolve);
    });
  }

  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}

describe('deploy/install-cni.sh against a fake host root and a fake daemon', () => {
  let tmp = '';
  let trees = 0;
  const children = new Set<ChildProcess>();
  const daemons = new Set<FakeDaemon>();
  const p = (...parts: string[]): string => join(tmp, ...parts);
  const hostDir = (): string => p('host', 'opt', 'pier');
  const binDir = (): string => p('host', 'opt', 'cni', 'bin');
  const netDir = (): string => p('host', 'etc', 'cni', 'net.d');
  const conflist = (): string => join(netDir(), '10-pier.conflist');
  const shim = (): string => join(binDir(), 'pier-cni');

  /** A tree as the image has it (build-tree.sh over pier's layout), with a stub dist/cni/main.cjs that reports how it runs. */
  function makeTree(marker: string): { dir: string; id: string } {
    const dir = p(`tree${++trees}`);
    mkdirSync(join(dir, 'dist', 'cni'), { recursive: true });
    mkdirSync(join(dir, 'bin'));
    writeFileSync(join(dir, 'package.json'), JSON.stringify({ name: 'pier', version: '0.1.0', type: 'module' }));
    writeFileSync(join(dir, 'dist', 'cni', 'main.cjs'), `// ${marker}
const { readFileSync } = require('node:fs');
const libc = readFileSync('/proc/self/maps', 'utf8').split('\\n').filter((l) => /\\/libc[.-]/.test(l)).map((l) => l.split(/\\s+/).pop());
process.stdout.write(JSON.stringify({ marker: ${JSON.stringify(marker)}, argv: process.argv.slice(2), cmd: process.env.CNI_COMMAND,
  stdin: readFileSync(0, 'utf8'), execPath: process.execPath, libc: [...new Set(libc)] }));
`);
    execFileSync(BUILD_TREE, [dir, process.execPath], { stdio: ['ignore', 'ignore', 'pipe'] });
    return { dir, id: readFileSync(join(dir, '.tree-id'), 'utf8').trim() };
  }

  function start(tree: string, env: Record<string, string> = {}, args: string[] = ['install']): { child: ChildProcess; log: () => string; exited: Promise<number | null> } {
    // detached: a process group of its own, so that cleanup kills the script's children too (an
    // orphaned `sleep` would hold the pipes open and keep this file's process alive).
    const child = spawn(INSTALL, args, {
      detached: true,
      stdio: ['ignore', 'pipe', 'pipe'],
      env: {
        // TMPDIR nowhere: the container's / is read-only, so the script may use no temporary file of its own.
        PATH: process.env.PATH, TMPDIR: p('nonexistent'), HOST_ROOT: '', PIER_TREE: tree, PIER_HOST_DIR: hostDir(), CNI_BIN_DIR: binDir(), CNI_NET_DIR: netDir(),
        PIER_CNI_CONFLIST: p('configmap', '10-pier.conflist'), PIER_SOCKET: p('run', 'pier.sock'), NODE: process.execPath,
        PIER_WAIT_INTERVAL: '0.05', PIER_PING_INTERVAL: '0.05', PIER_PING_FAILURES: '2', PIER_PING_TIMEOUT_MS: '300', ...env,
      },
    });
    children.add(child);
    let out = '';
    child.stdout.on('data', (d: Buffer) => { out += String(d); });
    child.stderr.on('data', (d: Buffer) => { out += String(d); });
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => { resolve(code); }));
    return { child, log: () => out, exited };
  }

  async function fakeDaemon(): Promise<FakeDaemon> {
    const d = new FakeDaemon(p('run', 'pier.sock'));
    await d.listen();
    daemons.add(d);
    return d;
  }
  async function stopDaemon(d: FakeDaemon): Promise<void> {
    await d.close();
    daemons.delete(d);
  }

  let first: { dir: string; id: string };
  before(() => {
    tmp = mkdtempSync(join(tmpdir(), 'pier-install-cni-'));
    mkdirSync(p('run'));
    mkdirSync(p('configmap'));
    // The ConfigMap's conflist, as the pod's volume holds it.
    const cm = loadManifests().find((d) => keyOf(d.obj) === 'v1/ConfigMap')!.obj;
    writeFileSync(p('configmap', '10-pier.conflist'), cm.data['10-pier.conflist']);
    first = makeTree('first');
  });

  after(async () => {
    for (const c of children) {
      try {
        process.kill(-c.pid!, 'SIGKILL');
      } catch {
        // the group is gone already
      }
      c.stdout?.destroy();
      c.stderr?.destroy();
    }
    for (const d of daemons) await d.close();
    if (tmp) rmSync(tmp, { recursive: true, force: true });
  });

  it('writes the conflist only once the daemon answers a ping, keeps it while it answers, removes it when it stops and on SIGTERM', async () => {
    const run = start(first.dir);
    const state = (): string => `conflist ${existsSync(conflist()) ? 'present' : 'absent'}; log:\n${run.log()}`;

    // No daemon at all: the tree and the shim are installed, the conflist is not.
    await waitFor(() => run.log().includes('waiting for the pier daemon') && existsSync(shim()), 20_000, () => `the installer to wait: ${state()}`);
    assert.equal(existsSync(conflist()), false, state());
    assert.equal(readlinkSync(join(hostDir(), 'current')), `trees/${first.id}`);

    // A daemon that refuses, then one that does not answer: still no conflist.
    const d = await fakeDaemon();
    d.mode = 'refuse';
    await waitFor(() => d.lines.length >= 3, 20_000, () => `three pings: ${state()}`);
    assert.equal(existsSync(conflist()), false, state());
    d.mode = 'silent';
    const seen = d.connections;
    await waitFor(() => d.connections >= seen + 2, 20_000, () => `two unanswered pings: ${state()}`);
    assert.equal(existsSync(conflist()), false, state());
    assert.ok(d.lines.every((l) => l === '{"cmd":"ping","args":[]}'), `every request is pier's ping: ${JSON.stringify(d.lines)}`);

    // It answers: the conflist appears, whole (tmp file + rename: nothing else is ever in the directory).
    d.mode = 'ok';
    await waitFor(() => existsSync(conflist()), 20_000, () => `the conflist: ${state()}`);
    assert.equal(readFileSync(conflist(), 'utf8'), readFileSync(p('configmap', '10-pier.conflist'), 'utf8'));
    assert.equal(statSync(conflist()).mode & 0o777, 0o644);
    assert.deepEqual(readdirSync(netDir()), ['10-pier.conflist']);

    // The ConfigMap changes: the file follows.
    const changed = JSON.parse(readFileSync(p('configmap', '10-pier.conflist'), 'utf8'));
    changed.plugins[0].mtu = 9000;
    writeFileSync(p('configmap', '10-pier.conflist'), JSON.stringify(changed, null, 2) + '\n');
    await waitFor(() => readFileSync(conflist(), 'utf8').includes('9000'), 20_000, () => `the changed conflist: ${state()}`);

    // The daemon stops answering (2 pings in a row): the conflist goes; it answers again: it comes back.
    await stopDaemon(d);
    // The script removes the file, then logs: wait for the line, not only for the file.
    await waitFor(() => !existsSync(conflist()) && /did not answer 2 pings in a row/.test(run.log()), 20_000, () => `the conflist to go: ${state()}`);
    const d2 = await fakeDaemon();
    await waitFor(() => existsSync(conflist()), 20_000, () => `the conflist again: ${state()}`);

    // SIGTERM: the conflist goes, the plugin and the tree stay (pods attached by pier still need DEL), exit 0.
    run.child.kill('SIGTERM');
    assert.equal(await run.exited, 0, state());
    assert.equal(existsSync(conflist()), false, state());
    assert.deepEqual(readdirSync(netDir()), []);
    assert.ok(existsSync(shim()));
    assert.ok(existsSync(join(hostDir(), 'trees', first.id, 'dist', 'cni', 'main.cjs')));
    await stopDaemon(d2);
  });

  it('the shim runs pier-cni with the tree\'s node and C library, arguments, environment and stdin passed through', () => {
    const text = readFileSync(shim(), 'utf8');
    assert.match(text, /^#!\/bin\/sh\n/);
    assert.ok((statSync(shim()).mode & 0o111) !== 0, 'executable');
    const out = execFileSync(shim(), ['x', 'y'], { input: '{"cniVersion":"1.1.0"}', env: { PATH: '/usr/bin:/bin', CNI_COMMAND: 'VERSION' }, encoding: 'utf8' });
    const r = JSON.parse(out);
    assert.equal(r.marker, 'first');
    assert.deepEqual(r.argv, ['x', 'y']);
    assert.equal(r.cmd, 'VERSION');
    assert.equal(r.stdin, '{"cniVersion":"1.1.0"}');
    const tree = join(hostDir(), 'trees', first.id);
    if (existsSync(join(tree, 'lib', 'ld.so'))) {
      assert.equal(r.execPath, join(tree, 'lib', 'ld.so'), 'started through the tree\'s loader');
      assert.ok(r.libc.length > 0 && r.libc.every((l: string) => l.startsWith(join(tree, 'lib') + '/')), `the tree's libc only: ${r.libc}`);
      // Real files on the host, not links into the image.
      for (const f of readdirSync(join(tree, 'lib'))) assert.ok(statSync(join(tree, 'lib', f)).isFile() && !readlinkOrNull(join(tree, 'lib', f)), `lib/${f} is a file`);
      assert.equal(readlinkOrNull(join(tree, 'node', 'bin', 'node')), null);
    }
  });

  it('an upgrade switches current to the new tree in one rename, keeps the previous one and removes older ones', async () => {
    const d = await fakeDaemon();
    const runTo = async (tree: string): Promise<void> => {
      const run = start(tree, { PIER_CNI_CONFLIST: '' });
      await waitFor(() => run.log().includes('no conflist is written'), 20_000, () => `the installer: ${run.log()}`);
      assert.equal(existsSync(conflist()), false, 'PIER_CNI_CONFLIST empty: no conflist');
      run.child.kill('SIGTERM');
      assert.equal(await run.exited, 0, run.log());
    };
    const second = makeTree('second');
    await runTo(second.dir);
    assert.equal(readlinkSync(join(hostDir(), 'current')), `trees/${second.id}`);
    assert.deepEqual(readdirSync(join(hostDir(), 'trees')).sort(), [first.id, second.id].sort());
    assert.equal(JSON.parse(execFileSync(shim(), [], { input: '', encoding: 'utf8' })).marker, 'second');

    const third = makeTree('third');
    await runTo(third.dir);
    assert.equal(readlinkSync(join(hostDir(), 'current')), `trees/${third.id}`);
    assert.deepEqual(readdirSync(join(hostDir(), 'trees')).sort(), [second.id, third.id].sort(), 'the first tree is gone');
    assert.deepEqual(readdirSync(hostDir()).sort(), ['current', 'trees'], 'no temporary files left');

    // The same tree again: nothing copied.
    const again = start(third.dir, { PIER_CNI_CONFLIST: '' });
    await waitFor(() => again.log().includes('no conflist is written'), 20_000, () => again.log());
    assert.match(again.log(), /is already in/);
    again.child.kill('SIGTERM');
    assert.equal(await again.exited, 0);
    await stopDaemon(d);
  });

  it('`ping` exits 0 only when the daemon answers ok; a conflist that names no pier-cni is refused; `uninstall` removes what install wrote', async () => {
    // Asynchronously: the fake daemon answers from this process's event loop.
    const ping = async (): Promise<number | null> => start(first.dir, { PIER_PING_TIMEOUT_MS: '300' }, ['ping']).exited;
    assert.equal(await ping(), 1, 'no daemon');
    const d = await fakeDaemon();
    assert.equal(await ping(), 0);
    d.mode = 'refuse';
    assert.equal(await ping(), 1);
    d.mode = 'silent';
    assert.equal(await ping(), 1);
    await stopDaemon(d);

    writeFileSync(p('configmap', 'bad.conflist'), JSON.stringify({ cniVersion: '1.1.0', name: 'x', plugins: [{ type: 'bridge' }] }));
    const bad = start(first.dir, { PIER_CNI_CONFLIST: p('configmap', 'bad.conflist') });
    assert.equal(await bad.exited, 1);
    assert.match(bad.log(), /is not a conflist for pier-cni: no plugin in it has type pier-cni/);

    cpSync(p('configmap', '10-pier.conflist'), conflist());
    const un = start(first.dir, {}, ['uninstall']);
    assert.equal(await un.exited, 0, un.log());
    assert.equal(existsSync(conflist()), false);
    assert.equal(existsSync(shim()), false);
    assert.equal(existsSync(hostDir()), false);
  });
});

function readlinkOrNull(path: string): string | null {
  try {
    return readlinkSync(path);
  } catch {
    return null;
  }
}
