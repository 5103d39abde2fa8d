// pier-cni's log. stdout belongs to the runtime (the result or the error JSON, nothing else), so
// lines go to stderr, which runtimes keep with the plugin's failure, and, when PIER_CNI_LOG
// names a file, to that file too, with the debug lines: runtimes drop a plugin's stderr when it
// succeeds, so the file is where a successful call can be followed.
import { appendFileSync } from 'node:fs';

const file = process.env.PIER_CNI_LOG;
let context = '';

/** Who the lines are about (verb, container, interface), set once the environment is read. */
export function setLogContext(c: string): void {
  context = c;
}

function write(level: string, msg: string, toStderr: boolean): void {
  const line = `pier-cni[${process.pid}] ${level}${context ? ` ${context}` : ''}: ${msg}\n`;
  if (toStderr) process.stderr.write(line);
  if (file) {
    try {
      appendFileSync(file, `${new Date().toISOString()} ${line}`);
    } catch {
      // A log file that cannot be written must not fail the container's network.
    }
  }
}

export const log = {
  debug: (msg: string): void => write('debug', msg, false),
  warn: (msg: string): void => write('warn', msg, true),
  error: (msg: string): void => write('error', msg, true),
};
