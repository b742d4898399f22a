import { spawn, type ChildProcess } from 'node:child_process';
import http from 'node:http';
import https from 'node:https';
import { createServer, connect } from 'node:net';
import path from 'node:path';

const root = path.resolve(__dirname, '../../..');

/** The server binary scripts/test.sh built (debug or release). */
export const serverBin = path.resolve(
  process.env.PULSE_SERVER_BIN ? path.resolve(__dirname, '../..', process.env.PULSE_SERVER_BIN) : path.join(root, 'target/debug/server'),
);

/** A free TCP port on 127.0.0.1. */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const probe = createServer();
    probe.once('error', reject);
    probe.listen(0, '127.0.0.1', () => {
      const address = probe.address();
      probe.close(() => (typeof address === 'object' && address ? resolve(address.port) : reject(new Error('no port'))));
    });
  });
}

async function canConnect(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ port, host: '127.0.0.1' });
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

export interface ServerOptions {
  /** Extra flags for the server binary. */
  args?: string[];
  /** Extra environment variables. */
  env?: Record<string, string>;
  /** A fixed port (to restart a server at the same address); a free one by default. */
  port?: number;
}

/** Kills every server still running when the test worker exits. */
process.on('exit', () => PulseServer.running.forEach((server) => server.kill()));

/** A Pulse server process on loopback, started for a test. */
export class PulseServer {
  /** Servers started and not yet stopped (the fixtures stop the ones a test leaves behind). */
  static readonly running = new Set<PulseServer>();
  /** Every server started in this worker, in order (their logs are attached to failures). */
  static readonly started: PulseServer[] = [];

  private exited: Promise<number | null>;
  private log = '';

  private constructor(
    readonly port: number,
    private readonly child: ChildProcess,
    readonly options: ServerOptions,
  ) {
    this.exited = new Promise((resolve) => child.once('exit', (code) => resolve(code)));
    child.stdout?.on('data', (chunk) => (this.log += chunk));
    child.stderr?.on('data', (chunk) => (this.log += chunk));
  }

  /** Whether the server was started with a TLS certificate. */
  get tls(): boolean {
    return (this.options.args ?? []).includes('--tls-cert');
  }

  get url(): string {
    return `${this.tls ? 'https' : 'http'}://127.0.0.1:${this.port}`;
  }

  /** GET `path` on this server (accepting its self-signed certificate); returns the body. */
  async get(path: string): Promise<string> {
    const client = this.tls ? https : http;
    return new Promise((resolve, reject) => {
      const request = client.get(`${this.url}${path}`, { rejectUnauthorized: false }, (response) => {
        let body = '';
        response.setEncoding('utf8');
        response.on('data', (chunk) => (body += chunk));
        response.on('end', () => resolve(body));
      });
      request.on('error', reject);
    });
  }

  /** Everything the server printed so far. */
  output(): string {
    return this.log;
  }

  static async start(options: ServerOptions = {}): Promise<PulseServer> {
    const port = options.port ?? (await freePort());
    const child = spawn(serverBin, ['--addr', `127.0.0.1:${port}`, ...(options.args ?? [])], {
      cwd: root,
      env: {
        ...process.env,
        LEPTOS_SITE_ROOT: path.join(root, 'target/site'),
        RUST_LOG: 'warn',
        ...options.env,
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const server = new PulseServer(port, child, options);
    PulseServer.running.add(server);
    PulseServer.started.push(server);

    const deadline = Date.now() + 15_000;
    while (!(await canConnect(port))) {
      if (child.exitCode !== null) throw new Error(`server exited (${child.exitCode}):\n${server.output()}`);
      if (Date.now() > deadline) throw new Error(`server did not listen on ${port}:\n${server.output()}`);
      await new Promise((r) => setTimeout(r, 50));
    }
    return server;
  }

  /** Stops the server with `signal` and waits for it to exit; returns its exit code. */
  async stop(signal: NodeJS.Signals = 'SIGTERM'): Promise<number | null> {
    PulseServer.running.delete(this);
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill(signal);
    return this.exited;
  }

  /** Kills the process at once (used when the worker exits). */
  kill(): void {
    this.child.kill('SIGKILL');
  }

  /** Starts a new server with the same settings on the same port. */
  async restart(): Promise<PulseServer> {
    await this.stop();
    return PulseServer.start({ ...this.options, port: this.port });
  }

  /** One metric's value from GET /metrics, e.g. metric('pulse_streams_open{stream="counter"}'). */
  async metric(name: string): Promise<number> {
    const text = await this.get('/metrics');
    const line = text.split('\n').find((l) => l.startsWith(`${name} `));
    if (!line) throw new Error(`no metric ${name} in:\n${text}`);
    return Number(line.slice(name.length + 1));
  }
}
