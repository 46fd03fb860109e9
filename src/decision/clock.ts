// input.time for the policy, in the configured zone. The wasm target has no
// time.now_ns, so the proxy supplies the time. Intl formatting costs a few µs:
// the calendar fields are recomputed only when the minute changes.

import type { TimeInput } from '../policy/contract.ts';

export interface Clock {
  nowMs(): number;
}

export const systemClock: Clock = { nowMs: () => Date.now() };

/** A clock fixed at a start instant that then advances with real time (tests, what-if). */
export function offsetClock(startMs: number): Clock {
  const offset = startMs - Date.now();
  return { nowMs: () => Date.now() + offset };
}

export class TimeSource {
  readonly zone: string;
  private readonly clock: Clock;
  private readonly format: Intl.DateTimeFormat;
  private minuteStartMs = -1;
  private weekday = '';
  private hour = 0;
  private minute = 0;
  private offsetText = 'Z';

  constructor(zone: string, clock: Clock = systemClock) {
    this.zone = zone;
    this.clock = clock;
    this.format = new Intl.DateTimeFormat('en-US', {
      timeZone: zone,
      weekday: 'long',
      hour: 'numeric',
      minute: 'numeric',
      hourCycle: 'h23',
      timeZoneName: 'longOffset',
    });
  }

  nowMs(): number {
    return this.clock.nowMs();
  }

  now(): TimeInput {
    const ms = this.clock.nowMs();
    const minuteStart = ms - (ms % 60_000);
    if (minuteStart !== this.minuteStartMs) this.recompute(minuteStart);
    return {
      unix_ns: ms * 1_000_000,
      rfc3339: this.rfc3339(ms),
      weekday: this.weekday,
      hour: this.hour,
      minute: this.minute,
      tz: this.zone,
    };
  }

  private recompute(minuteStart: number): void {
    this.minuteStartMs = minuteStart;
    for (const part of this.format.formatToParts(minuteStart)) {
      if (part.type === 'weekday') this.weekday = part.value;
      else if (part.type === 'hour') this.hour = Number(part.value);
      else if (part.type === 'minute') this.minute = Number(part.value);
      else if (part.type === 'timeZoneName') {
        // 'GMT', 'GMT+01:00'; Node 24 writes UTC as 'GMT+00:00': RFC 3339 says Z.
        const offset = part.value.replace('GMT', '');
        this.offsetText = offset === '' || /^[+-]00:?00$/.test(offset) ? 'Z' : offset;
      }
    }
  }

  /** RFC 3339 in the configured zone, e.g. 2026-11-27T23:55:00.123+01:00. */
  private rfc3339(ms: number): string {
    if (this.offsetText === 'Z') return new Date(ms).toISOString();
    const sign = this.offsetText.startsWith('-') ? -1 : 1;
    const [h, m] = this.offsetText.slice(1).split(':');
    const offsetMs = sign * (Number(h) * 60 + Number(m ?? 0)) * 60_000;
    return new Date(ms + offsetMs).toISOString().replace('Z', this.offsetText);
  }
}
