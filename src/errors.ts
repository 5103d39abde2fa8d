// Errors a user sees: a stable code, what is wrong, and how to fix it. Shared by every layer that
// answers a user (the CLI, the daemon, the ports' control halves).
export class PierError extends Error {
  constructor(readonly code: string, message: string, readonly hint?: string) {
    super(message);
  }
  toJSON(): { code: string; message: string; hint?: string | undefined } {
    return { code: this.code, message: this.message, hint: this.hint };
  }
}
