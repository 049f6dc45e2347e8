/**
 * Restart policy after a server crash: exponential backoff, reset after a stable run,
 * and a limit on consecutive failures. Pure (time is passed in).
 */

export interface BackoffOptions {
  /** First delay, ms. */
  baseMs: number;
  /** Largest delay, ms. */
  maxMs: number;
  /** A run at least this long counts as stable: the next crash starts the backoff over. */
  stableMs: number;
  /** Consecutive quick crashes after which the extension stops restarting. */
  maxAttempts: number;
}

export const DEFAULT_BACKOFF: BackoffOptions = { baseMs: 1_000, maxMs: 30_000, stableMs: 120_000, maxAttempts: 6 };

export class Backoff {
  private attempts = 0;
  private startedAt: number | undefined;

  constructor(private readonly options: BackoffOptions = DEFAULT_BACKOFF) {}

  /** The server (re)started at `now`. */
  started(now: number): void {
    this.startedAt = now;
  }

  /** A user's restart: forget past crashes. */
  reset(): void {
    this.attempts = 0;
    this.startedAt = undefined;
  }

  /** The server crashed at `now`: the delay before the next start, or undefined to give up. */
  crashed(now: number): number | undefined {
    if (this.startedAt !== undefined && now - this.startedAt >= this.options.stableMs) {
      this.attempts = 0;
    }
    this.startedAt = undefined;
    if (this.attempts >= this.options.maxAttempts) {
      return undefined;
    }
    const delay = Math.min(this.options.maxMs, this.options.baseMs * 2 ** this.attempts);
    this.attempts += 1;
    return delay;
  }

  get consecutiveCrashes(): number {
    return this.attempts;
  }
}
