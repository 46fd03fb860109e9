// Admin HTTP on its own port (loopback by default): /healthz, /readyz,
// POST /reload, and the routes later layers add (/metrics). Main thread only.

import http from 'node:http';
import type { Logger } from 'pino';
import type { Config } from '../config/config.ts';
import { UpstreamReadiness } from '../upstream/probe.ts';

export interface AdminRoutes {
  /** The policy is loaded (or none is configured). */
  policyReady(): boolean;
  /** Statements can be audited (false only for a fail-closed sink that is failing). */
  auditReady(): boolean;
  reload(reason: string): Promise<{ ok: boolean; revision: string | null; message: string; changed: boolean }>;
  /** Extra GET routes: path → handler returning [status, content type, body]. */
  extra?: Map<string, () => Promise<[number, string, string]>>;
}

export function startAdminServer(config: Config, log: Logger, routes: AdminRoutes): Promise<http.Server | null> {
  const admin = config.admin;
  if (admin === null) return Promise.resolve(null);
  // Logins, not TCP: a stopped postmaster still has its connections accepted by the kernel.
  const upstreamReadiness = new UpstreamReadiness(config.upstream);
  const server = http.createServer((req, res) => {
    const url = (req.url ?? '/').split('?')[0] ?? '/';
    const send = (status: number, type: string, body: string): void => {
      res.writeHead(status, { 'content-type': type, 'cache-control': 'no-store' });
      res.end(body);
    };
    const json = (status: number, body: unknown): void => send(status, 'application/json', `${JSON.stringify(body)}\n`);
    void (async () => {
      if (url === '/healthz' && req.method === 'GET') return send(200, 'text/plain', 'ok\n');
      if (url === '/readyz' && req.method === 'GET') {
        const policy = routes.policyReady();
        const audit = routes.auditReady();
        const probe = await upstreamReadiness.check();
        const ready = policy && audit && probe.ok;
        return json(ready ? 200 : 503, { ready, policy, audit, upstream: probe.ok, upstream_error: probe.ok ? null : probe.error });
      }
      if (url === '/reload') {
        if (req.method !== 'POST') return json(405, { error: 'use POST /reload' });
        const outcome = await routes.reload('admin POST /reload');
        return json(outcome.ok ? 200 : 422, outcome);
      }
      const extra = req.method === 'GET' ? routes.extra?.get(url) : undefined;
      if (extra !== undefined) {
        const [status, type, body] = await extra();
        return send(status, type, body);
      }
      return json(404, { error: `no route ${req.method ?? ''} ${url}` });
    })().catch((err: unknown) => {
      log.error({ err: String(err), url }, 'admin request failed');
      if (!res.headersSent) json(500, { error: 'internal error' });
    });
  });
  return new Promise((resolve, reject) => {
    server.once('error', (err) => reject(new Error(`admin listen on ${admin.host}:${admin.port} failed: ${err.message}`)));
    server.listen(admin.port, admin.host, () => {
      const address = server.address();
      log.info({ host: admin.host, port: typeof address === 'object' && address !== null ? address.port : admin.port }, 'admin listening');
      resolve(server);
    });
  });
}
