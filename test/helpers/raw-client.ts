// A byte-level PostgreSQL client for tests: send exactly the bytes a test
// wants and read back typed messages. No driver in between.

import net from 'node:net';
import { ScramClientExchange } from '../../src/auth/scram.ts';

export interface Message {
  type: string;
  body: Buffer;
}

export class RawClient {
  readonly socket: net.Socket;
  private buf = Buffer.alloc(0);
  private waiters: Array<() => void> = [];
  closed = false;

  private constructor(socket: net.Socket) {
    this.socket = socket;
    socket.on('data', (chunk: Buffer) => {
      this.buf = Buffer.concat([this.buf, chunk]);
      this.wake();
    });
    socket.on('close', () => {
      this.closed = true;
      this.wake();
    });
    socket.on('error', () => {});
  }

  static connect(port: number, host = '127.0.0.1'): Promise<RawClient> {
    return new Promise((resolve, reject) => {
      const socket = net.connect({ port, host }, () => resolve(new RawClient(socket)));
      socket.once('error', reject);
    });
  }

  private wake(): void {
    for (const w of this.waiters.splice(0)) w();
  }

  write(bytes: Buffer): void {
    this.socket.write(bytes);
  }

  private async waitFor(n: number, timeoutMs: number): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    while (this.buf.length < n) {
      if (this.closed) return false;
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out waiting for ${n} bytes (have ${this.buf.length})`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
    return true;
  }

  /** One raw byte (SSLRequest answer). */
  async readByte(timeoutMs = 5000): Promise<string | null> {
    if (!(await this.waitFor(1, timeoutMs))) return null;
    const b = this.buf.subarray(0, 1).toString('latin1');
    this.buf = this.buf.subarray(1);
    return b;
  }

  /** Next typed message, or null when the connection closed first. */
  async read(timeoutMs = 5000): Promise<Message | null> {
    if (!(await this.waitFor(5, timeoutMs))) return null;
    const len = this.buf.readInt32BE(1);
    if (!(await this.waitFor(1 + len, timeoutMs))) return null;
    const msg = { type: String.fromCharCode(this.buf[0] as number), body: Buffer.from(this.buf.subarray(5, 1 + len)) };
    this.buf = this.buf.subarray(1 + len);
    return msg;
  }

  /** Read messages until one of `type` (inclusive). */
  async readUntil(type: string, timeoutMs = 5000): Promise<Message[]> {
    const out: Message[] = [];
    for (;;) {
      const m = await this.read(timeoutMs);
      if (m === null) throw new Error(`connection closed before "${type}"; got ${out.map((x) => describe(x)).join(', ')}`);
      out.push(m);
      if (m.type === type) return out;
    }
  }

  /** Resolves true once the server closes the connection. */
  async waitClosed(timeoutMs = 5000): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    while (!this.closed && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    return this.closed;
  }

  /** Startup + SCRAM login; resolves after the first ReadyForQuery. */
  async login(user: string, password: string, database = 'app', extra: Record<string, string> = {}): Promise<Message[]> {
    this.write(startupPacket({ user, database, ...extra }));
    const sasl = await this.read();
    if (sasl?.type !== 'R' || sasl.body.readInt32BE(0) !== 10) throw new Error(`expected AuthenticationSASL, got ${describe(sasl)}`);
    const scram = new ScramClientExchange(password);
    const first = scram.clientFirst();
    const mech = Buffer.from('SCRAM-SHA-256\0');
    const len = Buffer.alloc(4);
    len.writeInt32BE(first.data.length);
    this.write(message('p', Buffer.concat([mech, len, first.data])));
    const cont = await this.read();
    if (cont?.type !== 'R' || cont.body.readInt32BE(0) !== 11) throw new Error(`expected SASLContinue, got ${describe(cont)}`);
    this.write(message('p', scram.handleServerFirst(cont.body.subarray(4))));
    const fin = await this.read();
    if (fin?.type !== 'R' || fin.body.readInt32BE(0) !== 12) throw new Error(`expected SASLFinal, got ${describe(fin)}`);
    scram.verifyServerFinal(fin.body.subarray(4));
    return this.readUntil('Z', 10_000);
  }

  end(): void {
    this.socket.end();
  }
}

function describe(m: Message | null): string {
  if (m === null) return 'connection closed';
  if (m.type === 'E') return `ErrorResponse ${JSON.stringify(Object.fromEntries(errorFields(m)))}`;
  return `message "${m.type}"`;
}

export function message(type: string, body: Buffer | string = Buffer.alloc(0)): Buffer {
  return frame(type.charCodeAt(0), typeof body === 'string' ? Buffer.from(body, 'utf8') : body);
}

/** A v3 message: type byte, int32 length (counting itself), body. */
export function frame(type: number, body: Uint8Array): Buffer {
  const out = Buffer.alloc(5 + body.length);
  out[0] = type;
  out.writeInt32BE(4 + body.length, 1);
  out.set(body, 5);
  return out;
}

export function startupPacket(params: Record<string, string>, code = 196608): Buffer {
  const body = Buffer.from(Object.entries(params).map(([k, v]) => `${k}\0${v}\0`).join('') + '\0', 'utf8');
  const out = Buffer.alloc(8 + body.length);
  out.writeInt32BE(8 + body.length, 0);
  out.writeInt32BE(code, 4);
  body.copy(out, 8);
  return out;
}

export function query(sql: string): Buffer {
  return message('Q', sql + '\0');
}

export function parse(name: string, sql: string): Buffer {
  return message('P', Buffer.concat([Buffer.from(`${name}\0${sql}\0`, 'utf8'), Buffer.from([0, 0])]));
}

export function bind(portal: string, statement: string): Buffer {
  // no parameter formats, no parameters, no result formats
  return message('B', Buffer.concat([Buffer.from(`${portal}\0${statement}\0`, 'utf8'), Buffer.from([0, 0, 0, 0, 0, 0])]));
}

export function execute(portal = '', maxRows = 0): Buffer {
  const b = Buffer.alloc(4);
  b.writeInt32BE(maxRows);
  return message('E', Buffer.concat([Buffer.from(`${portal}\0`), b]));
}

export function describePortal(name = ''): Buffer {
  return message('D', `P${name}\0`);
}

export const sync = (): Buffer => message('S');
export const flush = (): Buffer => message('H');
export const terminate = (): Buffer => message('X');

export function errorFields(m: Message): Map<string, string> {
  const fields = new Map<string, string>();
  let pos = 0;
  while (pos < m.body.length && m.body[pos] !== 0) {
    const end = m.body.indexOf(0, pos);
    fields.set(String.fromCharCode(m.body[pos] as number), m.body.toString('utf8', pos + 1, end));
    pos = end + 1;
  }
  return fields;
}

export function sqlstate(m: Message | null | undefined): string | undefined {
  return m?.type === 'E' ? errorFields(m).get('C') : undefined;
}
