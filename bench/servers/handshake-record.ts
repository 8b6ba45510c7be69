/**
 * The handshake record the reconnect-storm scenario asks the echo servers for (config `record`):
 * every handshake started, completed or failed (corral: also every socket closed unserved), with
 * the peer's address and port, to match against the attempts the clients had already given up.
 */
import { writeFileSync } from 'node:fs';

/** One recorded event: [kind, address, port, start (ms, wall clock), end (ms), detail]. */
export type HandshakeRecord = [kind: 'start' | 'open' | 'fail' | 'reject', address: string, port: number, start: number, end: number, detail: string];

/** Collects {@link HandshakeRecord}s in memory and writes them to a file as JSON. */
export class HandshakeRecorder {
  readonly #records: HandshakeRecord[] = [];

  constructor(readonly file: string) {}

  /** Record an event ending now that took `durationMs` (start = now − durationMs). */
  add(kind: HandshakeRecord[0], address: string | undefined, port: number | undefined, detail = '', durationMs = 0): void {
    const now = Date.now();
    this.#records.push([kind, address ?? '', port ?? 0, now - durationMs, now, detail]);
  }

  /** Write every record to the file. */
  write(): void {
    writeFileSync(this.file, JSON.stringify(this.#records));
  }
}
