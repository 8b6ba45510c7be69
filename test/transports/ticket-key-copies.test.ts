/**
 * Ticket keys are copied at start: an application that zeroes its key buffers once the listener
 * has started (they are secrets) changes nothing — tickets made before still resume, and new
 * tickets are still sealed under the first key, so another listener given the same keys resumes
 * them. With a list of keys the secure context reads them again for every ticket, so without a
 * copy every new ticket would be sealed under an all-zero key.
 */
import { randomBytes } from 'node:crypto';
import { afterEach, describe, expect, it } from 'vitest';
import { cleanUp, tlsListener, visit } from './sessions.js';

afterEach(cleanUp);

describe.each(['TLSv1.3', 'TLSv1.2'] as const)('zeroing the caller’s ticket-key buffers after start, over %s', (version) => {
  const v = { maxVersion: version, minVersion: version } as const;

  it.each([
    ['a list of keys', 2],
    ['one key', 1],
  ] as const)('with %s changes nothing', async (_what, count) => {
    const keys = Array.from({ length: count }, () => randomBytes(48));
    // What a deployment does: each listener gets the keys from its own buffers, then wipes them.
    const forA = keys.map((k) => Buffer.from(k));
    const forB = keys.map((k) => Buffer.from(k));
    const given = (list: Buffer[]) => (count === 1 ? list[0]! : list);
    // Two listeners of one service (one session id context), side by side.
    const sessionIdContext = 'one-service';
    const a = await tlsListener({ ticketKeys: given(forA), sessionIdContext });
    const b = await tlsListener({ ticketKeys: given(forB), sessionIdContext });
    const before = await visit(a, v);
    for (const k of [...forA, ...forB]) k.fill(0);

    // A ticket from before still resumes on both.
    expect((await visit(a, { ...v, session: before.session })).resumed).toBe(true);
    expect((await visit(b, { ...v, session: before.session })).resumed).toBe(true);
    // New tickets still work across the two listeners, both ways.
    const fromA = await visit(a, v);
    expect(fromA.resumed).toBe(false);
    expect((await visit(b, { ...v, session: fromA.session })).resumed).toBe(true);
    const fromB = await visit(b, v);
    expect((await visit(a, { ...v, session: fromB.session })).resumed).toBe(true);
    // And they are sealed under the first key: a listener given only that key resumes them.
    const onlyFirst = await tlsListener({ ticketKeys: Buffer.from(keys[0]!), sessionIdContext });
    expect((await visit(onlyFirst, { ...v, session: fromA.session })).resumed).toBe(true);
  });
});
