// The daemon's common refusals, each with its fix.
import { PierError } from '../errors.ts';

export { PierError };

export const err = {
  noBridge: (br: string) => new PierError('ENOBRIDGE', `bridge ${br} does not exist`, `create it with: pier add-br ${br}`),
  bridgeExists: (br: string) => new PierError('EEXIST', `bridge ${br} already exists`, 'choose another name, or see it with: pier show'),
  noPort: (br: string, p: string, elsewhere?: string) => elsewhere !== undefined
    ? new PierError('ENOPORT', `port ${p} is on bridge ${elsewhere}, not ${br}`, `pier del-port ${elsewhere} ${p}`)
    : new PierError('ENOPORT', `port ${p} does not exist on bridge ${br}`, 'list the ports with: pier show'),
  portExists: (p: string, br: string) => new PierError('EEXIST', `port ${p} already exists (on bridge ${br})`, `choose another name, or remove it first: pier del-port ${br} ${p}`),
  badName: (what: string, name: string) => new PierError('EINVAL', `${what} name '${name}' is not valid`, 'use letters, digits, _ . : - (not starting with a dash)'),
};
