// connectUpstream against a fake upstream: a net.createServer that reads the
// proxy's packets and writes raw protocol bytes back. What goes on the wire
// (the startup packet, password, SASL, SSLRequest, CancelRequest), how every
// answer and failure of a login is classified, and the bytes that follow
// ReadyForQuery in the same read being handed over, not dropped.

import assert from 'node:assert/strict';
import net from 'node:net';
import { after, describe, test } from 'node:test';
import { md5PasswordMessage } from '../../src/auth/md5.ts';
import { createScramVerifier, parseScramVerifier, ScramServerExchange, type SaltedPasswordCache } from '../../src/auth/scram.ts';
import type { UpstreamTlsConfig } from '../../src/config/config.ts';
import { RolegateError, type ErrorCode } from '../../src/errors.ts';
import * as be from '../../src/protocol/backend.ts';
import { Backend, Frontend, StartupCode, TxStatus } from '../../src/protocol/constants.ts';
import { decodeStartupPacket, readCString } from '../../src/protocol/frontend.ts';
import { cancelRequest, connectUpstream, LOGIN_MAX_MESSAGE_BYTES, sendUpstreamCancel, type UpstreamLogin, type UpstreamTarget } from '../../src/upstream/connect.ts';
import { frame } from '../helpers/raw-client.ts';

// ---- a fake upstream ----------------------------------------------------------------

/** The proxy's side of one connection, read as the server reads it. */
class Peer {
  private buf = Buffer.alloc(0);
  private waiters: Array<() => void> = [];
  closed = false;
  readonly socket: net.Socket;

  constructor(socket: net.Socket) {
    this.socket = socket;
    socket.setNoDelay(true);
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

  private wake(): void {
    for (const w of this.waiters.splice(0)) w();
  }

  private async take(n: number): Promise<Buffer> {
    while (this.buf.length < n) {
      if (this.closed) throw new Error(`peer closed with ${this.buf.length} of ${n} bytes`);
      await new Promise<void>((resolve) => this.waiters.push(resolve));
    }
    const out = this.buf.subarray(0, n);
    this.buf = this.buf.subarray(n);
    return out;
  }

  /** An untyped startup-phase packet (StartupMessage, SSLRequest, CancelRequest). */
  async packet(): Promise<Buffer> {
    const head = Buffer.from(await this.take(4));
    return Buffer.concat([head, await this.take(head.readInt32BE(0) - 4)]);
  }

  /** A typed message: type and body. */
  async message(): Promise<{ type: number; body: Buffer }> {
    const head = await this.take(5);
    return { type: head[0] as number, body: Buffer.from(await this.take(head.readInt32BE(1) - 4)) };
  }

  /** Resolves when the proxy closes its side. */
  async ended(): Promise<void> {
    while (!this.closed) await new Promise<void>((resolve) => this.waiters.push(resolve));
  }

  write(...bytes: Buffer[]): void {
    this.socket.write(Buffer.concat(bytes));
  }
}

interface Fake {
  port: number;
  /** The next connection the proxy makes. */
  next(): Promise<Peer>;
}

const servers: net.Server[] = [];
after(() => {
  for (const s of servers) s.close();
});

async function fakeUpstream(): Promise<Fake> {
  const pending: Peer[] = [];
  const waiting: Array<(p: Peer) => void> = [];
  const server = net.createServer((socket) => {
    const peer = new Peer(socket);
    const w = waiting.shift();
    if (w === undefined) pending.push(peer);
    else w(peer);
  });
  servers.push(server);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as net.AddressInfo).port;
  return {
    port,
    next: () => {
      const p = pending.shift();
      return p === undefined ? new Promise((resolve) => waiting.push(resolve)) : Promise.resolve(p);
    },
  };
}

// ---- bytes the fake server sends ----------------------------------------------------

function auth(code: number, rest: Buffer = Buffer.alloc(0)): Buffer {
  const body = Buffer.alloc(4 + rest.length);
  body.writeInt32BE(code, 0);
  rest.copy(body, 4);
  return frame(Backend.Authentication, body);
}

const AUTH_OK = auth(0);
const READY = be.readyForQuery(TxStatus.Idle);
/** What a server sends after AuthenticationOk: ParameterStatus…, BackendKeyData, ReadyForQuery. */
const WELCOME = Buffer.concat([
  be.parameterStatus('server_version', '18.0'),
  be.parameterStatus('TimeZone', 'UTC'),
  be.noticeResponse({ severity: 'NOTICE', sqlstate: '00000', message: 'welcome' }),
  be.backendKeyData(4242, -99),
  READY,
]);

function errorResponse(sqlstate: string, message: string): Buffer {
  return be.errorResponse({ severity: 'FATAL', sqlstate, message });
}

// ---- the proxy side ------------------------------------------------------------------

const NO_TLS: UpstreamTlsConfig = { mode: 'disable', caFile: null, caPem: null, serverName: null };

function target(fake: Fake, extra: Partial<UpstreamTarget> = {}): UpstreamTarget {
  return { host: '127.0.0.1', port: fake.port, connectTimeoutMs: 5000, tls: NO_TLS, ...extra };
}

function login(extra: Partial<UpstreamLogin> = {}): UpstreamLogin {
  return { user: 'app_reader', database: 'orders', password: 'secret', parameters: new Map([['application_name', 'svc']]), ...extra };
}

const cache = (): SaltedPasswordCache => new Map();

/** Rejects with a RolegateError of `code` whose message matches. */
async function rejectsWith(p: Promise<unknown>, code: ErrorCode, message: RegExp): Promise<RolegateError> {
  let caught: unknown = null;
  await p.then(
    () => assert.fail('expected the login to fail'),
    (err: unknown) => {
      caught = err;
    },
  );
  assert.ok(caught instanceof RolegateError, `a RolegateError, got ${String(caught)}`);
  assert.equal(caught.code, code, caught.message);
  assert.match(caught.message, message);
  return caught;
}

/** Start a login and answer its StartupMessage; returns the peer and the decoded parameters. */
async function begin(fake: Fake, l: UpstreamLogin = login(), t: UpstreamTarget = target(fake)): Promise<{ ready: ReturnType<typeof connectUpstream>; peer: Peer; params: Map<string, string> }> {
  const ready = connectUpstream(t, l, cache());
  ready.catch(() => {}); // examined by the test
  const peer = await fake.next();
  const decoded = decodeStartupPacket(await peer.packet());
  assert.equal(decoded.kind, 'startup', JSON.stringify(decoded));
  return { ready, peer, params: decoded.kind === 'startup' ? decoded.params : new Map() };
}

// ---- tests --------------------------------------------------------------------------

describe('connectUpstream: the startup packet', () => {
  test('user, database, the passthrough parameters, then client_encoding=UTF8 once, standard_conforming_strings=on and role = the login role', async () => {
    const fake = await fakeUpstream();
    const { ready, peer, params } = await begin(fake, login({ password: null, parameters: new Map([['application_name', 'svc'], ['TimeZone', 'Europe/Berlin']]) }));
    assert.deepEqual(
      [...params].sort(),
      [
        ['application_name', 'svc'],
        ['client_encoding', 'UTF8'],
        ['database', 'orders'],
        ['role', 'app_reader'],
        ['standard_conforming_strings', 'on'],
        ['TimeZone', 'Europe/Berlin'],
        ['user', 'app_reader'],
      ].sort(),
    );
    assert.deepEqual([...params.keys()].slice(0, 2), ['user', 'database']);
    peer.write(AUTH_OK, WELCOME);
    (await ready).socket.destroy();
  });

  test('pinned values win over the same names among the caller’s parameters', async () => {
    const fake = await fakeUpstream();
    const parameters = new Map([
      ['standard_conforming_strings', 'off'],
      ['client_encoding', 'UTF8'],
    ]);
    const { ready, peer, params } = await begin(fake, login({ password: null, parameters }));
    assert.equal(params.get('standard_conforming_strings'), 'on');
    assert.equal(params.get('client_encoding'), 'UTF8');
    peer.write(AUTH_OK, WELCOME);
    (await ready).socket.destroy();
  });

  test('a NUL in the login (it would inject parameters) is refused before connecting', async () => {
    const fake = await fakeUpstream();
    await rejectsWith(connectUpstream(target(fake), login({ database: 'orders\0options\0-c role=admin' }), cache()), 'RG_INTERNAL', /NUL/);
  });
});

describe('connectUpstream: a successful login', () => {
  test('ParameterStatus, BackendKeyData and ReadyForQuery are reported; a notice is skipped', async () => {
    const fake = await fakeUpstream();
    const { ready, peer } = await begin(fake, login({ password: null }));
    peer.write(AUTH_OK, WELCOME);
    const r = await ready;
    assert.deepEqual([...r.parameterStatus], [
      ['server_version', '18.0'],
      ['TimeZone', 'UTC'],
    ]);
    assert.equal(r.processId, 4242);
    assert.equal(r.secretKey, -99);
    assert.equal(r.txStatus, TxStatus.Idle);
    assert.equal(r.rest.length, 0);
    r.socket.destroy();
  });

  test('bytes after ReadyForQuery in the same read are handed over in `rest`, including a partial message', async () => {
    const fake = await fakeUpstream();
    const { ready, peer } = await begin(fake, login({ password: null }));
    const notify = frame(Backend.NotificationResponse, Buffer.concat([Buffer.from([0, 0, 0, 1]), Buffer.from('chan\0payload\0')]));
    const status = be.parameterStatus('TimeZone', 'Asia/Tokyo');
    const after = Buffer.concat([notify, status.subarray(0, 7)]);
    peer.write(AUTH_OK, WELCOME, after);
    const r = await ready;
    assert.deepEqual(r.rest, after);
    // The rest of the partial message arrives on the socket, for the relay.
    const later = new Promise<Buffer>((resolve) => r.socket.once('data', resolve));
    peer.write(status.subarray(7));
    assert.deepEqual(await later, status.subarray(7));
    r.socket.destroy();
  });

  test('the server’s messages one byte per write (however they arrive, nothing is lost)', async () => {
    const fake = await fakeUpstream();
    const { ready, peer } = await begin(fake, login({ password: null }));
    const all = Buffer.concat([AUTH_OK, WELCOME]);
    for (const b of all) {
      peer.write(Buffer.from([b]));
      await new Promise((resolve) => setImmediate(resolve));
    }
    const r = await ready;
    assert.equal(r.processId, 4242);
    assert.equal(r.parameterStatus.get('TimeZone'), 'UTC');
    assert.equal(r.rest.length, 0);
    r.socket.destroy();
  });

  test('a NoticeResponse exactly at the size cap is read and skipped', async () => {
    const fake = await fakeUpstream();
    const { ready, peer } = await begin(fake, login({ password: null }));
    const big = frame(Backend.NoticeResponse, Buffer.concat([Buffer.from('SNOTICE\0M'), Buffer.alloc(LOGIN_MAX_MESSAGE_BYTES - 15, 0x61), Buffer.from('\0\0')]));
    assert.equal(big.readInt32BE(1), LOGIN_MAX_MESSAGE_BYTES);
    peer.write(AUTH_OK, big, WELCOME);
    (await ready).socket.destroy();
  });
});

describe('connectUpstream: password methods', () => {
  test('cleartext: a PasswordMessage with the configured password', async () => {
    const fake = await fakeUpstream();
    const { ready, peer } = await begin(fake);
    peer.write(auth(3));
    const m = await peer.message();
    assert.equal(m.type, Frontend.Password);
    assert.deepEqual(m.body, Buffer.from('secret\0'));
    peer.write(AUTH_OK, WELCOME);
    (await ready).socket.destroy();
  });

  test('md5: the answer is md5(md5(password + user) + salt)', async () => {
    const fake = await fakeUpstream();
    const { ready, peer } = await begin(fake);
    const salt = Buffer.from([1, 2, 3, 4]);
    peer.write(auth(5, salt));
    const m = await peer.message();
    assert.equal(m.type, Frontend.Password);
    assert.deepEqual(m.body, Buffer.concat([md5PasswordMessage('app_reader', 'secret', salt), Buffer.from([0])]));
    peer.write(AUTH_OK, WELCOME);
    (await ready).socket.destroy();
  });

  test('a role configured as trust against a server that asks for a password: RG_UPSTREAM_AUTH', async () => {
    for (const request of [auth(3), auth(5, Buffer.from([1, 2, 3, 4])), auth(10, Buffer.from('SCRAM-SHA-256\0\0'))]) {
      const fake = await fakeUpstream();
      const { ready, peer } = await begin(fake, login({ password: null }));
      peer.write(request);
      await rejectsWith(ready, 'RG_UPSTREAM_AUTH', /configured as trust/);
      await peer.ended();
    }
  });
});

describe('connectUpstream: SCRAM-SHA-256', () => {
  const verifier = parseScramVerifier(createScramVerifier('secret', { iterations: 4096 }));
  assert.ok(verifier !== null);

  /** Run the server side up to (not including) SASLFinal; returns the server-final-message. */
  async function scramUpTo(peer: Peer): Promise<Buffer> {
    peer.write(auth(10, Buffer.from('SCRAM-SHA-256-PLUS\0SCRAM-SHA-256\0\0')));
    const initial = await peer.message();
    assert.equal(initial.type, Frontend.Password);
    const mechanism = readCString(initial.body, 0, initial.body.length);
    assert.equal(mechanism?.text, 'SCRAM-SHA-256');
    const at = mechanism?.next ?? 0;
    const data = initial.body.subarray(at + 4);
    assert.equal(initial.body.readInt32BE(at), data.length);
    const server = new ScramServerExchange(verifier, { mockSeed: Buffer.alloc(16, 1), userName: 'app_reader', channelBinding: null });
    const first = server.handleClientFirst('SCRAM-SHA-256', data);
    assert.ok(first.ok, JSON.stringify(first));
    peer.write(auth(11, first.serverFirst));
    const final = await peer.message();
    assert.equal(final.type, Frontend.Password);
    const result = server.handleClientFinal(final.body);
    assert.ok(result.ok, JSON.stringify(result));
    return result.serverFinal;
  }

  test('a full exchange: the server’s signature is verified before AuthenticationOk is trusted', async () => {
    const fake = await fakeUpstream();
    const { ready, peer } = await begin(fake);
    const serverFinal = await scramUpTo(peer);
    peer.write(auth(12, serverFinal), AUTH_OK, WELCOME);
    const r = await ready;
    assert.equal(r.processId, 4242);
    r.socket.destroy();
  });

  test('AuthenticationOk before SASLFinal: RG_UPSTREAM_AUTH', async () => {
    const fake = await fakeUpstream();
    const { ready, peer } = await begin(fake);
    await scramUpTo(peer);
    peer.write(AUTH_OK, WELCOME);
    await rejectsWith(ready, 'RG_UPSTREAM_AUTH', /AuthenticationOk before completing SCRAM/);
  });

  test('a wrong server signature: RG_UPSTREAM_AUTH', async () => {
    const fake = await fakeUpstream();
    const { ready, peer } = await begin(fake);
    await scramUpTo(peer);
    peer.write(auth(12, Buffer.from(`v=${Buffer.alloc(32, 7).toString('base64')}`)), AUTH_OK, WELCOME);
    await rejectsWith(ready, 'RG_UPSTREAM_AUTH', /incorrect server signature/);
  });

  test('no SCRAM-SHA-256 among the mechanisms; SASLContinue or SASLFinal without SASL: RG_UPSTREAM_AUTH', async () => {
    const cases: Array<[Buffer, RegExp]> = [
      [auth(10, Buffer.from('SCRAM-SHA-256-PLUS\0\0')), /offers SASL mechanisms SCRAM-SHA-256-PLUS; rolegate speaks SCRAM-SHA-256/],
      [auth(11, Buffer.from('r=x,s=eA==,i=1')), /SASLContinue without SASL/],
      [auth(12, Buffer.from('v=x')), /SASLFinal without SASL/],
    ];
    for (const [request, message] of cases) {
      const fake = await fakeUpstream();
      const { ready, peer } = await begin(fake);
      peer.write(request);
      await rejectsWith(ready, 'RG_UPSTREAM_AUTH', message);
    }
  });
});

describe('connectUpstream: refusals and protocol violations', () => {
  test('ErrorResponse 28xxx is the credentials’ fault (RG_UPSTREAM_AUTH), others RG_UPSTREAM_UNREACHABLE; the SQLSTATE goes in detail', async () => {
    const cases: Array<[string, ErrorCode]> = [
      ['28P01', 'RG_UPSTREAM_AUTH'],
      ['28000', 'RG_UPSTREAM_AUTH'],
      ['3D000', 'RG_UPSTREAM_UNREACHABLE'],
      ['57P03', 'RG_UPSTREAM_UNREACHABLE'],
    ];
    for (const [sqlstate, code] of cases) {
      const fake = await fakeUpstream();
      const { ready, peer } = await begin(fake);
      peer.write(errorResponse(sqlstate, 'nope'));
      const err = await rejectsWith(ready, code, /^upstream refused role "app_reader" on database "orders": nope$/);
      assert.equal(err.detail, `upstream SQLSTATE ${sqlstate}`);
      await peer.ended();
    }
  });

  test('an ErrorResponse without a SQLSTATE: RG_UPSTREAM_UNREACHABLE, no detail', async () => {
    const fake = await fakeUpstream();
    const { ready, peer } = await begin(fake);
    peer.write(frame(Backend.ErrorResponse, Buffer.from('SFATAL\0Mgone\0\0')));
    const err = await rejectsWith(ready, 'RG_UPSTREAM_UNREACHABLE', /: gone$/);
    assert.equal(err.detail, undefined);
  });

  test('violations are RG_UPSTREAM_PROTOCOL and close the connection', async () => {
    const tooLong = Buffer.from([Backend.ParameterStatus, 0, 0, 0, 0]);
    tooLong.writeInt32BE(LOGIN_MAX_MESSAGE_BYTES + 1, 1);
    const cases: Array<[string, Buffer, RegExp]> = [
      ['a length over the login cap', tooLong, /longer than 65536 bytes/],
      ['a length field under 4', Buffer.from([Backend.ParameterStatus, 0, 0, 0, 3]), /invalid length/],
      ['a DataRow', frame(Backend.DataRow, Buffer.from([0, 0])), /unexpected upstream message DataRow during startup/],
      ['an unknown type', frame(0x7a, Buffer.alloc(0)), /unexpected upstream message type 0x7a during startup/],
      ['NegotiateProtocolVersion (never asked for)', frame(Backend.NegotiateProtocolVersion, Buffer.from([0, 3, 0, 0, 0, 0, 0, 0])), /NegotiateProtocolVersion/],
      ['AuthenticationGSS', auth(7), /unsupported authentication method \(Authentication request code 7\)/],
      ['AuthenticationMD5Password with a 3-byte salt', auth(5, Buffer.from([1, 2, 3])), /malformed Authentication request/],
      ['a ParameterStatus without its value', frame(Backend.ParameterStatus, Buffer.from('TimeZone\0')), /malformed ParameterStatus/],
      ['a BackendKeyData of 4 bytes', frame(Backend.BackendKeyData, Buffer.alloc(4)), /malformed BackendKeyData/],
      ['a ReadyForQuery with status X', Buffer.concat([AUTH_OK, frame(Backend.ReadyForQuery, Buffer.from('X'))]), /malformed ReadyForQuery/],
    ];
    for (const [label, bytes, message] of cases) {
      const fake = await fakeUpstream();
      const { ready, peer } = await begin(fake, login({ password: null }));
      peer.write(bytes);
      await rejectsWith(ready, 'RG_UPSTREAM_PROTOCOL', message).catch((err: unknown) => assert.fail(`${label}: ${String(err)}`));
      await peer.ended();
    }
  });

  test('the upstream closing during startup: RG_UPSTREAM_LOST', async () => {
    const fake = await fakeUpstream();
    const { ready, peer } = await begin(fake);
    peer.write(AUTH_OK, be.parameterStatus('a', 'b').subarray(0, 4));
    peer.socket.end();
    await rejectsWith(ready, 'RG_UPSTREAM_LOST', /closed the connection during startup/);
  });

  test('no ReadyForQuery within connectTimeoutMs: RG_UPSTREAM_UNREACHABLE', async () => {
    const fake = await fakeUpstream();
    const { ready, peer } = await begin(fake, login(), { ...target(fake), connectTimeoutMs: 200 });
    peer.write(AUTH_OK);
    await rejectsWith(ready, 'RG_UPSTREAM_UNREACHABLE', /did not complete startup within 200 ms/);
    await peer.ended();
  });

  test('nothing listening: RG_UPSTREAM_UNREACHABLE', async () => {
    const fake = await fakeUpstream();
    const closed = servers.pop() as net.Server;
    await new Promise((resolve) => closed.close(resolve));
    await rejectsWith(connectUpstream(target(fake), login(), cache()), 'RG_UPSTREAM_UNREACHABLE', /could not connect to upstream 127\.0\.0\.1:/);
  });
});

describe('connectUpstream: TLS negotiation', () => {
  const requireTls: UpstreamTlsConfig = { mode: 'require', caFile: null, caPem: null, serverName: null };

  test('SSLRequest first; a server answering N: RG_UPSTREAM_UNREACHABLE', async () => {
    const fake = await fakeUpstream();
    const ready = connectUpstream(target(fake, { tls: requireTls }), login(), cache());
    const peer = await fake.next();
    assert.deepEqual(await peer.packet(), Buffer.from('0000000804d2162f', 'hex'));
    peer.write(Buffer.from('N'));
    await rejectsWith(ready, 'RG_UPSTREAM_UNREACHABLE', /does not accept TLS \(upstream\.tls\.mode is require\)/);
  });

  test('more than one byte in answer to SSLRequest (bytes injected before the handshake): RG_UPSTREAM_PROTOCOL', async () => {
    const fake = await fakeUpstream();
    const ready = connectUpstream(target(fake, { tls: requireTls }), login(), cache());
    const peer = await fake.next();
    await peer.packet();
    peer.write(Buffer.concat([Buffer.from('S'), AUTH_OK]));
    await rejectsWith(ready, 'RG_UPSTREAM_PROTOCOL', /more than one byte \(possible man-in-the-middle\)/);
  });
});

describe('cancel', () => {
  test('sendUpstreamCancel sends exactly one CancelRequest with the given key', async () => {
    const fake = await fakeUpstream();
    const errors: Error[] = [];
    sendUpstreamCancel(target(fake), 4242, -99, (err) => errors.push(err));
    const peer = await fake.next();
    const packet = await peer.packet();
    assert.deepEqual(packet, cancelRequest(4242, -99));
    assert.equal(packet.readInt32BE(4), StartupCode.CancelRequest);
    assert.deepEqual(decodeStartupPacket(packet), { kind: 'cancel', processId: 4242, secretKey: -99 });
    await peer.ended();
    assert.deepEqual(errors, []);
  });
});
