// Raw HTTP/1.1 over node:net, for tests that send what fetch refuses to (two Content-Length
// headers, HTTP/1.0, malformed escapes, any bytes at all) and check what comes back byte for byte.
import net from 'node:net';

export interface RawResponse {
  readonly status: number;
  readonly statusText: string;
  /** Lower-cased names; a header sent twice has two values. */
  readonly headers: ReadonlyMap<string, readonly string[]>;
  readonly body: Buffer;
}

export type ParsedResponses =
  | {
      readonly ok: true;
      readonly responses: readonly RawResponse[];
      /** Bytes after the last complete response: a response still arriving (or cut off). */
      readonly incomplete: boolean;
      /** A 101 ended the HTTP part of the connection; what follows is another protocol. */
      readonly upgraded: boolean;
    }
  | { readonly ok: false; readonly reason: string };

const statusLinePattern = /^HTTP\/1\.1 ([1-5]\d\d) ([^\r\n]*)$/;
const headerLinePattern = /^([!#$%&'*+\-.^_`|~0-9A-Za-z]+):[ \t]*([^\r\n]*?)[ \t]*$/;
const headSectionBytesMax = 64 * 1024;

/**
 * Splits what a server sent into HTTP/1.1 responses, strictly: any byte that is not part of a
 * well-formed status line, header or framed body makes it `ok: false`. `headRequest`: the
 * responses answer HEAD requests (headers, no body whatever Content-Length says).
 */
export function parseHttpResponses(bytes: Buffer, options: { readonly headRequest?: boolean } = {}): ParsedResponses {
  const responses: RawResponse[] = [];
  let offset = 0;
  while (offset < bytes.length) {
    const headEnd = bytes.indexOf('\r\n\r\n', offset, 'latin1');
    if (headEnd === -1) {
      if (bytes.length - offset > headSectionBytesMax) return { ok: false, reason: 'head section without an end' };
      const partial = bytes.subarray(offset).toString('latin1');
      // A prefix of a status line is a response still arriving; anything else is garbage.
      if (!'HTTP/1.1 '.startsWith(partial.slice(0, 9))) return { ok: false, reason: `not a status line: ${JSON.stringify(partial.slice(0, 80))}` };
      return { ok: true, responses, incomplete: true, upgraded: false };
    }
    const lines = bytes.subarray(offset, headEnd).toString('latin1').split('\r\n');
    const statusMatch = statusLinePattern.exec(lines[0] ?? '');
    if (!statusMatch) return { ok: false, reason: `not a status line: ${JSON.stringify((lines[0] ?? '').slice(0, 80))}` };
    const headers = new Map<string, string[]>();
    for (const line of lines.slice(1)) {
      const match = headerLinePattern.exec(line);
      if (!match) return { ok: false, reason: `not a header line: ${JSON.stringify(line.slice(0, 80))}` };
      const name = (match[1] as string).toLowerCase();
      headers.set(name, [...(headers.get(name) ?? []), match[2] as string]);
    }
    const status = Number(statusMatch[1]);
    let cursor = headEnd + 4;
    let body: Buffer = Buffer.alloc(0);
    const lengths = headers.get('content-length');
    const chunked = headers.get('transfer-encoding')?.some((v) => v.toLowerCase() === 'chunked') ?? false;
    if (lengths && lengths.length > 1) return { ok: false, reason: 'response with several Content-Length headers' };
    if (lengths && chunked) return { ok: false, reason: 'response with Content-Length and chunked encoding' };
    if (status === 101) {
      responses.push({ status, statusText: statusMatch[2] as string, headers, body });
      return { ok: true, responses, incomplete: false, upgraded: true };
    }
    const bodyless = options.headRequest === true || status < 200 || status === 204 || status === 304;
    if (!bodyless) {
      if (chunked) {
        const chunks: Buffer[] = [];
        for (;;) {
          const sizeEnd = bytes.indexOf('\r\n', cursor, 'latin1');
          if (sizeEnd === -1) return { ok: true, responses, incomplete: true, upgraded: false };
          const sizeText = bytes.subarray(cursor, sizeEnd).toString('latin1');
          if (!/^[0-9a-fA-F]{1,8}$/.test(sizeText)) return { ok: false, reason: `bad chunk size ${JSON.stringify(sizeText)}` };
          const size = parseInt(sizeText, 16);
          if (bytes.length < sizeEnd + 2 + size + 2) return { ok: true, responses, incomplete: true, upgraded: false };
          chunks.push(bytes.subarray(sizeEnd + 2, sizeEnd + 2 + size));
          if (bytes.toString('latin1', sizeEnd + 2 + size, sizeEnd + 4 + size) !== '\r\n') return { ok: false, reason: 'chunk without CRLF' };
          cursor = sizeEnd + 4 + size;
          if (size === 0) break;
        }
        body = Buffer.concat(chunks);
      } else if (lengths) {
        const lengthText = lengths[0] as string;
        if (!/^\d{1,10}$/.test(lengthText)) return { ok: false, reason: `bad Content-Length ${JSON.stringify(lengthText)}` };
        const length = Number(lengthText);
        if (bytes.length < cursor + length) return { ok: true, responses, incomplete: true, upgraded: false };
        body = bytes.subarray(cursor, cursor + length);
        cursor += length;
      } else {
        // Framed by the close: everything that follows (uWS always sends a length or chunks).
        body = bytes.subarray(cursor);
        cursor = bytes.length;
      }
    }
    responses.push({ status, statusText: statusMatch[2] as string, headers, body });
    offset = cursor;
  }
  return { ok: true, responses, incomplete: false, upgraded: false };
}

export interface RawExchange {
  /** Everything the server sent. */
  readonly received: Buffer;
  /** The server closed the connection (or reset it). */
  readonly closedByServer: boolean;
  /** Nothing came for `quietMs` and `complete` never held: the client gave up and closed. */
  readonly gaveUp: boolean;
}

/**
 * Connects, writes `request`, and collects what comes back until `complete(received)` holds,
 * the server closes, or nothing has arrived for `quietMs` (then it closes the socket itself).
 */
export function rawExchange(
  port: number,
  request: Buffer | string,
  options: { readonly quietMs: number; readonly complete?: (received: Buffer) => boolean; readonly host?: string },
): Promise<RawExchange> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let settled = false;
    let quietTimer: NodeJS.Timeout | undefined;
    const socket = net.connect(port, options.host ?? '127.0.0.1');
    const finish = (closedByServer: boolean, gaveUp: boolean) => {
      if (settled) return;
      settled = true;
      if (quietTimer) clearTimeout(quietTimer);
      socket.destroy();
      resolve({ received: Buffer.concat(chunks), closedByServer, gaveUp });
    };
    const armQuietTimer = () => {
      if (quietTimer) clearTimeout(quietTimer);
      quietTimer = setTimeout(() => finish(false, true), options.quietMs);
    };
    socket.on('connect', () => {
      socket.write(request);
      armQuietTimer();
    });
    socket.on('data', (chunk: Buffer) => {
      chunks.push(chunk);
      if (options.complete?.(Buffer.concat(chunks))) finish(false, false);
      else armQuietTimer();
    });
    // A reset after the server refused (or closed with unread bytes) is a close like any other.
    socket.on('error', () => finish(true, false));
    socket.on('close', () => finish(true, false));
  });
}

/** True once `received` holds `count` complete responses (or a 101). */
export function hasResponses(count: number, options: { readonly headRequest?: boolean } = {}): (received: Buffer) => boolean {
  return (received) => {
    const parsed = parseHttpResponses(received, options);
    if (!parsed.ok) return true;
    return parsed.upgraded || (!parsed.incomplete && parsed.responses.length >= count);
  };
}

/** A raw request from its parts, CRLF line endings. */
export function rawRequest(requestLine: string, headers: readonly (readonly [string, string])[], body: string | Buffer = ''): Buffer {
  const head = `${requestLine}\r\n${headers.map(([name, value]) => `${name}: ${value}\r\n`).join('')}\r\n`;
  return Buffer.concat([Buffer.from(head, 'latin1'), typeof body === 'string' ? Buffer.from(body) : body]);
}
