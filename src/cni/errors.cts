// pier-cni's failures: a CNI error (code, msg, details) that main.ts prints as the spec's error
// JSON on stdout. Codes below 100 are the spec's; pier's own start at 100 (docs/design/cni.md).
export const CODE = {
  incompatibleVersion: 1,
  unsupportedField: 2,
  badEnv: 4,
  io: 5,
  decode: 6,
  badConfig: 7,
  badNetns: 8,
  tryAgain: 11,
  unavailable: 50,
  daemonRefused: 100,
  ipamFailed: 101,
  notAttached: 102,
} as const;

export class CniError extends Error {
  constructor(readonly code: number, msg: string, readonly details = '') {
    super(msg);
  }
}

/** The spec's error object, in the version the request used (1.1.0 when it could not be read). */
export function errorJson(e: unknown, cniVersion: string): string {
  const err = e instanceof CniError ? e : new CniError(999, 'internal error in pier-cni', e instanceof Error ? e.stack ?? e.message : String(e));
  return JSON.stringify({ cniVersion, code: err.code, msg: err.message, details: err.details });
}
