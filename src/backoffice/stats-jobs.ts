// The back office's scheduled statistics work: roll up the dates that received events, every RollupIntervalMs,
// and delete raw user activity past retention at start and once a day. The schedule reads an injected Clock, so
// tests drive it with a ManualClock and `tick()`; the service calls `tick()` from a timer. Logs say counts only.
import type { Clock } from '../common/clock.ts';
import type { Logger } from '../common/logger.ts';
import { describeError, isPosternError } from '../common/errors.ts';
import type { StatsStore } from '../stats/store.ts';

export const RETENTION_INTERVAL_MS = 24 * 60 * 60 * 1000;
/** How often the timer asks whether something is due; work itself follows the clock. */
export const MAX_TICK_INTERVAL_MS = 60 * 1000;
/** A date list longer than this is rolled up over several ticks, so one tick cannot run for hours. */
export const MAX_DATES_PER_TICK = 31;

export interface StatsJobsOptions {
  store: StatsStore;
  clock: Clock;
  log: Logger;
  retentionDays: number;
  rollupIntervalMs: number;
}

export interface TickResult {
  rolledUp: string[];
  retention: boolean;
}

/** "1234 server_tunnel, 56 domain_dest_bytes", or "no". */
export function describeDeleted(deleted: Record<string, number>): string {
  const parts = Object.entries(deleted)
    .filter(([, n]) => n > 0)
    .sort(([a], [b]) => a.localeCompare(b))
    .map(([kind, n]) => `${n} ${kind}`);
  return parts.length ? parts.join(', ') : 'no';
}

function why(e: unknown): string {
  // Store errors may quote rows; only our own typed errors are known to say nothing of the data.
  return isPosternError(e) ? describeError(e) : e instanceof Error ? e.name : 'unknown error';
}

export class StatsJobs {
  private nextRollupAt = 0;
  private nextRetentionAt = 0;
  private running: Promise<TickResult> | undefined;
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;

  constructor(private readonly o: StatsJobsOptions) {}

  /** Runs whatever is due now (both, the first time). Concurrent calls share the run in progress. */
  tick(): Promise<TickResult> {
    if (!this.running) {
      this.running = this.runDue().finally(() => {
        this.running = undefined;
      });
    }
    return this.running;
  }

  /** Starts the timer and runs the first tick; errors are logged, never thrown, and retried when next due. */
  start(): void {
    this.stopped = false;
    const every = Math.min(this.o.rollupIntervalMs, MAX_TICK_INTERVAL_MS);
    this.timer = setInterval(() => void this.tick(), every);
    this.timer.unref();
    void this.tick();
  }

  /** Stops the timer and waits for a run in progress. */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    await this.running?.catch(() => undefined);
  }

  private async runDue(): Promise<TickResult> {
    const result: TickResult = { rolledUp: [], retention: false };
    const now = this.o.clock.now().getTime();
    if (!this.stopped && now >= this.nextRetentionAt) {
      // Retention first: rolling up rows about to be deleted would be wasted work.
      try {
        const r = await this.o.store.deleteExpired(new Date(now), this.o.retentionDays);
        this.o.log.info(
          { deleted: r.deleted, cutoffDate: r.cutoffDate },
          `retention: deleted ${describeDeleted(r.deleted)} rows older than ${r.cutoffDate}`,
        );
        result.retention = true;
        this.nextRetentionAt = now + RETENTION_INTERVAL_MS;
      } catch (e) {
        this.o.log.error(`retention failed, will retry: ${why(e)}`);
        this.nextRetentionAt = now + this.o.rollupIntervalMs;
      }
    }
    if (!this.stopped && now >= this.nextRollupAt) {
      this.nextRollupAt = now + this.o.rollupIntervalMs;
      try {
        const dates = (await this.o.store.datesNeedingRollup()).slice(0, MAX_DATES_PER_TICK);
        for (const date of dates) {
          if (this.stopped) break;
          const s = await this.o.store.rollup(date);
          result.rolledUp.push(date);
          this.o.log.info(
            {
              date,
              events: s.events,
              dailyRows: s.dailyRows,
              domainRows: s.domainRows,
              failureRows: s.failureRows,
            },
            `rollup ${date}: ${s.events} events -> ${s.dailyRows} daily, ${s.domainRows} domain, ${s.failureRows} failure rows`,
          );
        }
      } catch (e) {
        this.o.log.error(`rollup failed, will retry: ${why(e)}`);
      }
    }
    return result;
  }
}
