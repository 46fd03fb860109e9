// What the server said at its last login for a given target, role, database and
// startup parameters: its ParameterStatus values. With upstream.connect: lazy a
// client is greeted with these and gets its upstream connection only on its
// first message (an idle client then holds one socket, not two); the real login
// later reports any value that changed in between as a ParameterStatus, which
// the protocol allows at any time. Per worker, bounded, refreshed by every login.
// While the first login of a kind is under way, other clients of that kind wait
// for its greeting instead of each logging in (a burst of new clients after a
// restart costs one upstream login, not one each).

type Waiter = (parameterStatus: ReadonlyMap<string, string> | null) => void;

export class WelcomeCache {
  private readonly entries = new Map<string, ReadonlyMap<string, string>>();
  private readonly waiting = new Map<string, Waiter[]>();
  readonly maxEntries: number;

  constructor(maxEntries = 1024) {
    this.maxEntries = maxEntries;
  }

  /** The key of one login: everything the server's ParameterStatus values can depend on. */
  static key(target: { host: string; port: number }, role: string, database: string, parameters: ReadonlyMap<string, string>): string {
    const params = [...parameters].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return JSON.stringify([target.host, target.port, role, database, params]);
  }

  get(key: string): ReadonlyMap<string, string> | undefined {
    return this.entries.get(key);
  }

  /** A login of this kind has started that will set() or fail() the key: later clients may wait() for it. */
  begin(key: string): void {
    if (!this.waiting.has(key)) this.waiting.set(key, []);
  }

  /** False when no login of this kind is under way; else `then` runs with its greeting (null: it failed). */
  wait(key: string, then: Waiter): boolean {
    const list = this.waiting.get(key);
    if (list === undefined) return false;
    list.push(then);
    return true;
  }

  set(key: string, parameterStatus: ReadonlyMap<string, string>): void {
    this.entries.delete(key);
    if (this.entries.size >= this.maxEntries) {
      const oldest = this.entries.keys().next();
      if (oldest.done !== true) this.entries.delete(oldest.value);
    }
    this.entries.set(key, parameterStatus);
    this.settle(key, parameterStatus);
  }

  /** The login of this kind failed: its waiters go on their own. */
  fail(key: string): void {
    this.settle(key, null);
  }

  private settle(key: string, parameterStatus: ReadonlyMap<string, string> | null): void {
    const list = this.waiting.get(key);
    if (list === undefined) return;
    this.waiting.delete(key);
    for (const then of list) then(parameterStatus);
  }

  get size(): number {
    return this.entries.size;
  }
}

/** ParameterStatus values of `actual` a client greeted with `announced` has not seen (new or changed). */
export function changedParameters(announced: ReadonlyMap<string, string>, actual: ReadonlyMap<string, string>): Array<[string, string]> {
  const out: Array<[string, string]> = [];
  for (const [k, v] of actual) if (announced.get(k) !== v) out.push([k, v]);
  return out;
}
