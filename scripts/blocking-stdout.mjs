// Loaded into every test process (scripts/test.sh: --import). node --test runs each test file in a
// child that reports to the runner through its stdout, a pipe; with --test-force-exit the child
// calls process.exit() once its tests are done, and on Linux report frames still queued on the
// pipe are lost: the runner counts fewer tests than ran and, when a lost one failed, names only
// the file (nodejs/node#64833, open in Node 20). Blocking writes leave nothing queued.
const handle = process.stdout._handle;
if (handle && typeof handle.setBlocking === 'function') handle.setBlocking(true);
