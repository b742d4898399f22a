import { createHmac } from 'node:crypto';
import type { PulseServer } from './server';

/** The publisher key the topic tests start servers with. */
export const PUBLISHER_KEY = 'end2end-publisher-secret-32-bytes-long!';

/** Flags for a server whose hub accepts tokens from `publisherToken`. */
export const HUB_FLAGS = ['--publisher-jwt-key', PUBLISHER_KEY];

const b64 = (value: string | Buffer) => Buffer.from(value).toString('base64url');

/** An HS256 access token that may publish to every topic of `server`'s hub. */
export function publisherToken(server: PulseServer): string {
  const header = b64(JSON.stringify({ alg: 'HS256', typ: 'at+jwt' }));
  const claims = b64(
    JSON.stringify({
      iss: 'https://localhost',
      aud: `${server.url}/.well-known/mercure`,
      exp: Math.floor(Date.now() / 1000) + 3600,
      authorization_details: [
        { type: 'https://mercure.rocks/authorization-detail', actions: ['publish'], topics: [{ match: '*' }] },
      ],
    }),
  );
  const signature = createHmac('sha256', PUBLISHER_KEY).update(`${header}.${claims}`).digest('base64url');
  return `${header}.${claims}.${signature}`;
}

/** Publishes `data` to the topic page `name` through the hub's HTTP API; returns the id. */
export async function publish(server: PulseServer, name: string, data: string, options: { private?: boolean } = {}): Promise<string> {
  const form = new URLSearchParams({ topic: `/topics/${name}`, data });
  if (options.private) form.set('private', 'on');
  const response = await fetch(`${server.url}/.well-known/mercure`, {
    method: 'POST',
    headers: { authorization: `Bearer ${publisherToken(server)}` },
    body: form,
  });
  if (response.status !== 200) throw new Error(`publish failed: ${response.status} ${await response.text()}`);
  return response.text();
}
