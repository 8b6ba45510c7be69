import { afterEach, describe, expect, it } from 'vitest';
import { type Listener, startListener } from '../src/index.js';
import { LineClient } from './support/clients.js';
import { echoProtocol } from './support/protocols.js';
import { transportCases, uniqueName } from './support/transports.js';

describe.each(transportCases())('echo over $name', (tc) => {
  let listener: Listener | undefined;
  afterEach(async () => {
    await listener?.stop({ timeout: 1000 });
    listener = undefined;
    tc.cleanup();
  });

  it('echoes lines, in order, on several connections at once', async () => {
    listener = await startListener({ name: uniqueName('echo'), protocol: echoProtocol, framing: 'line', ...(await tc.listenerOptions()) });
    const clients = await Promise.all([1, 2, 3].map(async () => new LineClient(await tc.connect(listener!))));
    for (let i = 0; i < 20; i++) {
      const replies = await Promise.all(clients.map((c, n) => c.request(`line ${n} ${i}`)));
      expect(replies).toEqual(clients.map((_, n) => `line ${n} ${i}`));
    }
    await listener.waitForConnections('==', 3);
    for (const c of clients) c.end();
    await Promise.all(clients.map((c) => c.closed));
    await listener.waitForConnections('==', 0);
    const info = await listener.info();
    expect(info.opened).toBe(3);
    expect(info.closed).toBe(3);
    expect(info.transport).toBe(tc.name === 'unix' ? 'tcp' : tc.name);
  });
});
