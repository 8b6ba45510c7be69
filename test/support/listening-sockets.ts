import { readFileSync } from 'node:fs';

/** Sockets in the LISTEN state on 127.0.0.1:`port`, from the kernel's table (Linux). */
export function listeningSockets(port: number): number {
  const hex = `0100007F:${port.toString(16).toUpperCase().padStart(4, '0')}`;
  return readFileSync('/proc/net/tcp', 'utf8')
    .split('\n')
    .slice(1)
    .filter((line) => {
      const fields = line.trim().split(/\s+/);
      return fields[1] === hex && fields[3] === '0A';
    }).length;
}
