import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { freePort } from './server';

/** Every redis-server these tests started and their data folders; killed and removed when
 * the test worker exits. */
const children = new Set<ChildProcess>();
const folders = new Set<string>();
process.on('exit', () => {
  children.forEach((child) => child.kill('SIGKILL'));
  folders.forEach((folder) => {
    try {
      rmSync(folder, { recursive: true, force: true });
    } catch {
      // A server killed a moment ago may still be writing; a leftover folder in /tmp is fine.
    }
  });
});

/** A real redis-server on a free loopback port, which tests kill and restart. */
export class RedisProcess {
  private child?: ChildProcess;
  private constructor(
    readonly port: number,
    private readonly dir: string,
  ) {}

  static async start(): Promise<RedisProcess> {
    const redis = new RedisProcess(await freePort(), mkdtempSync(path.join(tmpdir(), 'pulse-redis-')));
    folders.add(redis.dir);
    await redis.spawn();
    return redis;
  }

  get url(): string {
    return `redis://127.0.0.1:${this.port}/0`;
  }

  async spawn(): Promise<void> {
    this.child = spawn(
      'redis-server',
      ['--port', String(this.port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'yes', '--appendfsync', 'always', '--dir', this.dir, '--protected-mode', 'no'],
      { stdio: 'ignore' },
    );
    const child = this.child;
    children.add(child);
    child.once('exit', () => children.delete(child));
    const deadline = Date.now() + 10_000;
    while (!(await this.answers())) {
      if (Date.now() > deadline) throw new Error('redis-server did not start');
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }

  /** Kills the server at once, as a crash would. */
  async kill(): Promise<void> {
    const child = this.child;
    if (!child || child.exitCode !== null) return;
    await new Promise<void>((resolve) => {
      child.once('exit', () => resolve());
      child.kill('SIGKILL');
    });
  }

  private answers(): Promise<boolean> {
    return new Promise((resolve) => {
      const socket = connect({ port: this.port, host: '127.0.0.1' });
      socket.once('connect', () => socket.write('PING\r\n'));
      socket.once('data', (data) => {
        socket.destroy();
        resolve(data.toString().startsWith('+PONG'));
      });
      socket.once('error', () => resolve(false));
    });
  }
}
