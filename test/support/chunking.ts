import fc from 'fast-check';
import { expect } from 'vitest';
import { CorralError, FrameTooLargeError } from '../../src/errors.js';
import type { Framer } from '../../src/framing/framer.js';

/** Concatenates what `encode` returns (one piece or several). */
export function flat(encoded: Uint8Array | readonly Uint8Array[]): Buffer {
  return Buffer.concat(encoded instanceof Uint8Array ? [encoded] : [...encoded]);
}

/** Pushes one chunk and pulls frames until `undefined`, as the core does. */
export function pushAndDrain(framer: Framer, chunk: Buffer, out: Buffer[]): void {
  framer.push(chunk);
  for (let frame = framer.next(); frame !== undefined; frame = framer.next()) out.push(frame);
}

/** Feeds every chunk; returns the frames in order (the views themselves, not copies). */
export function drive(framer: Framer, chunks: readonly Buffer[]): Buffer[] {
  const out: Buffer[] = [];
  for (const chunk of chunks) pushAndDrain(framer, chunk, out);
  return out;
}

/** Splits `data` at the given cut points (taken modulo length + 1); equal cuts give empty chunks. */
export function splitAt(data: Buffer, cuts: readonly number[]): Buffer[] {
  const points = cuts.map((c) => c % (data.length + 1)).sort((a, b) => a - b);
  const chunks: Buffer[] = [];
  let prev = 0;
  for (const p of points) {
    chunks.push(Buffer.from(data.subarray(prev, p)));
    prev = p;
  }
  chunks.push(Buffer.from(data.subarray(prev)));
  return chunks;
}

/** Every byte alone, with an empty chunk between each. */
export function oneByteChunks(data: Buffer): Buffer[] {
  const chunks: Buffer[] = [];
  for (const byte of data) chunks.push(Buffer.from([byte]), Buffer.alloc(0));
  return chunks;
}

/** How a property test cuts its input into chunks. */
export type Chunking = { kind: 'cuts'; cuts: number[] } | { kind: 'bytes' };

/** Arbitrary cut points (mostly) or one byte at a time. */
export const chunkingArb: fc.Arbitrary<Chunking> = fc.oneof(
  { weight: 4, arbitrary: fc.array(fc.nat(), { maxLength: 40 }).map((cuts): Chunking => ({ kind: 'cuts', cuts })) },
  { weight: 1, arbitrary: fc.constant<Chunking>({ kind: 'bytes' }) },
);

export function chunk(data: Buffer, chunking: Chunking): Buffer[] {
  return chunking.kind === 'bytes' ? oneByteChunks(data) : splitAt(data, chunking.cuts);
}

/** Asserts that `fn` throws a FrameTooLargeError for `maxLength`. */
export function expectTooLarge(fn: () => unknown, maxLength: number): void {
  let caught: unknown;
  try {
    fn();
  } catch (error) {
    caught = error;
  }
  expect(caught).toBeInstanceOf(FrameTooLargeError);
  expect(caught).toBeInstanceOf(CorralError);
  const err = caught as FrameTooLargeError;
  expect(err.code).toBe('CORRAL_FRAME_TOO_LARGE');
  expect(err.maxLength).toBe(maxLength);
  expect(err.name).toBe('FrameTooLargeError');
}
