// Defaults shared by the daemon and the CLI (kept apart so client commands load nothing heavy).
export const VERSION = '0.1.0';
export const DEFAULT_STATE_DIR = '/var/lib/pier';
export const DEFAULT_SOCKET = '/run/pier/pier.sock';
