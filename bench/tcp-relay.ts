// The floor any Node.js proxy pays: a plain TCP relay that pipes bytes between
// the client and PostgreSQL and looks at none of them. Same shape as rolegate:
// N worker threads, each with its own `reusePort` listener, so the
// kernel spreads connections across them; no framing, no auth, no policy.
// bench/run.ts compares rolegate's throughput and CPU per transaction with it.
//
//   node bench/tcp-relay.ts --upstream-port 5432 [--upstream-host 127.0.0.1]
//                           [--host 127.0.0.1] [--port 0] [--workers 2]
//
// Prints one JSON line {"msg":"listening","port":N,"workers":W} once every
// worker listens; SIGTERM/SIGINT closes the listeners and exits.

import net from 'node:net';
import { parseArgs } from 'node:util';
import { isMainThread, parentPort, Worker, workerData } from 'node:worker_threads';

interface RelayWorkerData {
  host: string;
  port: number;
  upstreamHost: string;
  upstreamPort: number;
}

type WorkerMessage = { type: 'listening'; port: number } | { type: 'error'; message: string };

function relayWorker(data: RelayWorkerData): void {
  const server = net.createServer({ noDelay: true }, (client) => {
    const upstream = net.connect({ host: data.upstreamHost, port: data.upstreamPort, noDelay: true });
    // pipe() handles backpressure both ways; whichever side ends or fails first takes the other down.
    client.pipe(upstream);
    upstream.pipe(client);
    const close = (): void => {
      client.destroy();
      upstream.destroy();
    };
    client.on('error', close);
    upstream.on('error', close);
    client.on('close', close);
    upstream.on('close', close);
  });
  server.on('error', (error) => parentPort?.postMessage({ type: 'error', message: error.message } satisfies WorkerMessage));
  server.listen({ host: data.host, port: data.port, reusePort: true, backlog: 4096 }, () => {
    const address = server.address();
    const port = typeof address === 'object' && address !== null ? address.port : data.port;
    parentPort?.postMessage({ type: 'listening', port } satisfies WorkerMessage);
  });
  parentPort?.on('message', (msg: unknown) => {
    if (msg === 'stop') server.close(() => process.exit(0));
  });
}

function startWorker(data: RelayWorkerData): Promise<{ worker: Worker; port: number }> {
  const worker = new Worker(new URL(import.meta.url), { workerData: data });
  return new Promise((resolve, reject) => {
    worker.once('error', reject);
    worker.on('message', (msg: WorkerMessage) => {
      if (msg.type === 'listening') resolve({ worker, port: msg.port });
      else reject(new Error(`relay worker: ${msg.message}`));
    });
  });
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      host: { type: 'string', default: '127.0.0.1' },
      port: { type: 'string', default: '0' },
      'upstream-host': { type: 'string', default: '127.0.0.1' },
      'upstream-port': { type: 'string' },
      workers: { type: 'string', default: '2' },
    },
    strict: true,
  });
  const upstreamPort = Number(values['upstream-port']);
  const workerCount = Number(values.workers);
  if (!Number.isInteger(upstreamPort) || upstreamPort <= 0 || !Number.isInteger(workerCount) || workerCount < 1) {
    process.stderr.write('usage: node bench/tcp-relay.ts --upstream-port N [--upstream-host H] [--host H] [--port P] [--workers W]\n');
    process.exit(2);
  }
  const base = { host: values.host, upstreamHost: values['upstream-host'], upstreamPort };
  // Worker 0 binds (port 0 = any free one); the others join the port it got, as rolegate's supervisor does.
  const first = await startWorker({ ...base, port: Number(values.port) });
  const workers = [first.worker];
  for (let i = 1; i < workerCount; i++) workers.push((await startWorker({ ...base, port: first.port })).worker);
  process.stdout.write(`${JSON.stringify({ msg: 'listening', port: first.port, workers: workerCount })}\n`);
  const stop = (): void => {
    for (const worker of workers) worker.postMessage('stop');
    setTimeout(() => process.exit(0), 2000).unref();
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

if (isMainThread) await main();
else relayWorker(workerData as RelayWorkerData);
