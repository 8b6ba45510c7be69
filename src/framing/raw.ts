import type { Framer, Framing } from './framer.js';

class RawFramer implements Framer {
  private chunk: Buffer | undefined;

  get buffered(): number {
    return this.chunk?.length ?? 0;
  }

  push(chunk: Buffer): void {
    this.chunk = chunk;
  }

  next(): Buffer | undefined {
    const chunk = this.chunk;
    this.chunk = undefined;
    return chunk;
  }
}

/**
 * No framing: every chunk read from the socket is one frame, and `sendFrame` sends bytes as they are.
 */
export function rawFraming(): Framing {
  return {
    name: 'raw',
    createFramer: () => new RawFramer(),
    encode: (payload) => (typeof payload === 'string' ? Buffer.from(payload) : payload),
  };
}
