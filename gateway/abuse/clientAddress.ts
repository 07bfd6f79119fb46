// Who is at the other end, as far as abuse controls are concerned: a canonical client IP and its
// network (/24 for IPv4, /64 for IPv6). Rate limits and fraud counters key on these strings, so
// one address must always produce the same text: IPv4-mapped IPv6 (`::ffff:1.2.3.4`, and the
// long form uWS prints for IPv4 sockets) becomes plain IPv4, IPv6 is printed as RFC 5952
// (lowercase, longest zero run compressed).
//
// X-Forwarded-For is client-controlled text. Only hops appended by proxies we trust can be
// believed, so the header is walked from the right and the first hop that is not a trusted
// proxy is the client (the right-most untrusted hop). Everything to its left may be forged.
// With no trusted proxies configured the header is ignored and the socket address is the client.

export type IpVersion = 4 | 6;

export interface ParsedIp {
  readonly version: IpVersion;
  /** 4 bytes for IPv4 (also for IPv4-mapped IPv6), 16 for IPv6. */
  readonly bytes: Uint8Array;
}

export interface ClientAddress {
  readonly version: IpVersion;
  /** Canonical text of the client IP: the per-IP rate limit and fraud key. */
  readonly ip: string;
  /** `a.b.c.0/24` or `xxxx:xxxx:xxxx:xxxx::/64`: the per-network key. */
  readonly networkKey: string;
  /** True when the address came from X-Forwarded-For (a trusted proxy vouched for it). */
  readonly forwarded: boolean;
}

export interface Cidr {
  readonly version: IpVersion;
  readonly bytes: Uint8Array;
  readonly prefixLength: number;
}

/** Longest text accepted for one address (a full IPv6 with an IPv4 tail, brackets and port). */
const addressTextLengthMax = 64;
/** Header bytes and hops looked at: a bounded walk however long the client makes the header. */
export const forwardedForLengthMax = 2048;
export const forwardedForHopsMax = 32;
const socketAddressCacheEntriesMax = 10_000;

const ipv4NetworkPrefixLength = 24;
const ipv6NetworkPrefixLength = 64;

function parseIpv4(text: string): Uint8Array | undefined {
  const parts = text.split('.');
  if (parts.length !== 4) return undefined;
  const bytes = new Uint8Array(4);
  for (let i = 0; i < 4; i++) {
    const part = parts[i] as string;
    // Leading zeros are refused: "010" is octal to some parsers and decimal to others, and
    // two readings of one address would give two rate-limit keys.
    if (part.length === 0 || part.length > 3 || (part.length > 1 && part[0] === '0')) return undefined;
    let value = 0;
    for (let j = 0; j < part.length; j++) {
      const digit = part.charCodeAt(j) - 48;
      if (digit < 0 || digit > 9) return undefined;
      value = value * 10 + digit;
    }
    if (value > 255) return undefined;
    bytes[i] = value;
  }
  return bytes;
}

function parseHextet(text: string): number | undefined {
  if (text.length === 0 || text.length > 4) return undefined;
  let value = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    let digit: number;
    if (c >= 48 && c <= 57) digit = c - 48;
    else if (c >= 97 && c <= 102) digit = c - 87;
    else if (c >= 65 && c <= 70) digit = c - 55;
    else return undefined;
    value = value * 16 + digit;
  }
  return value;
}

function parseIpv6(text: string): Uint8Array | undefined {
  const doubleColon = text.indexOf('::');
  if (doubleColon !== -1 && text.indexOf('::', doubleColon + 1) !== -1) return undefined;
  const head = doubleColon === -1 ? text : text.slice(0, doubleColon);
  const tail = doubleColon === -1 ? '' : text.slice(doubleColon + 2);
  const headParts = head === '' ? [] : head.split(':');
  const tailParts = tail === '' ? [] : tail.split(':');
  const groups: number[] = [];
  const tailGroups: number[] = [];
  // An embedded IPv4 may only be the very last part ("1.2.3.4::" is not an address).
  const lastParts = doubleColon === -1 ? headParts : tailParts;
  const last = lastParts[lastParts.length - 1];
  let ipv4Tail: Uint8Array | undefined;
  if (last !== undefined && last.includes('.')) {
    ipv4Tail = parseIpv4(last);
    if (!ipv4Tail) return undefined;
    lastParts.pop();
  }
  for (const part of headParts) {
    const value = parseHextet(part);
    if (value === undefined) return undefined;
    groups.push(value);
  }
  for (const part of tailParts) {
    const value = parseHextet(part);
    if (value === undefined) return undefined;
    tailGroups.push(value);
  }
  const groupsNeeded = ipv4Tail ? 6 : 8;
  const present = groups.length + tailGroups.length;
  if (doubleColon === -1) {
    if (present !== groupsNeeded) return undefined;
  } else if (present > groupsNeeded - 1) {
    return undefined;
  }
  while (groups.length + tailGroups.length < groupsNeeded) groups.push(0);
  const all = [...groups, ...tailGroups];
  const bytes = new Uint8Array(16);
  for (let i = 0; i < all.length; i++) {
    const value = all[i] as number;
    bytes[i * 2] = value >> 8;
    bytes[i * 2 + 1] = value & 0xff;
  }
  if (ipv4Tail) bytes.set(ipv4Tail, 12);
  return bytes;
}

function isIpv4Mapped(bytes: Uint8Array): boolean {
  for (let i = 0; i < 10; i++) if (bytes[i] !== 0) return false;
  return bytes[10] === 0xff && bytes[11] === 0xff;
}

/**
 * Parses one address as it appears on a socket or in X-Forwarded-For: IPv4, IPv6 (compressed or
 * not, with an IPv4 tail, a zone id, in brackets, with a port). IPv4-mapped IPv6 comes back as
 * IPv4. Returns undefined for anything that is not an address.
 */
export function parseIp(input: string): ParsedIp | undefined {
  let text = input.trim();
  if (text.length === 0 || text.length > addressTextLengthMax) return undefined;
  if (text[0] === '[') {
    const close = text.indexOf(']');
    if (close === -1) return undefined;
    const after = text.slice(close + 1);
    if (after !== '' && !/^:\d{1,5}$/.test(after)) return undefined;
    text = text.slice(1, close);
  } else if (text.indexOf(':') !== -1 && text.indexOf(':') === text.lastIndexOf(':') && text.includes('.')) {
    // "1.2.3.4:5678": an IPv4 with a port (an IPv6 has at least two colons).
    const colon = text.indexOf(':');
    if (!/^\d{1,5}$/.test(text.slice(colon + 1))) return undefined;
    text = text.slice(0, colon);
  }
  const zone = text.indexOf('%');
  if (zone !== -1) text = text.slice(0, zone);
  if (text.includes(':')) {
    const bytes = parseIpv6(text);
    if (!bytes) return undefined;
    if (isIpv4Mapped(bytes)) return { version: 4, bytes: bytes.slice(12) };
    return { version: 6, bytes };
  }
  const bytes = parseIpv4(text);
  return bytes ? { version: 4, bytes } : undefined;
}

/** RFC 5952 text: lowercase, no leading zeros, the longest run (≥ 2) of zero groups as `::`. */
export function formatIp(ip: ParsedIp): string {
  const b = ip.bytes;
  if (ip.version === 4) return `${b[0]}.${b[1]}.${b[2]}.${b[3]}`;
  const groups: number[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(((b[i] as number) << 8) | (b[i + 1] as number));
  let bestStart = -1;
  let bestLength = 0;
  for (let i = 0; i < 8; ) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLength) {
      bestStart = i;
      bestLength = j - i;
    }
    i = j;
  }
  const hex = (from: number, to: number) => groups.slice(from, to).map((g) => g.toString(16)).join(':');
  if (bestLength < 2) return hex(0, 8);
  return `${hex(0, bestStart)}::${hex(bestStart + bestLength, 8)}`;
}

function masked(ip: ParsedIp, prefixLength: number): ParsedIp {
  const bytes = new Uint8Array(ip.bytes.length);
  for (let i = 0; i < bytes.length; i++) {
    const bitsLeft = prefixLength - i * 8;
    const mask = bitsLeft >= 8 ? 0xff : bitsLeft <= 0 ? 0 : (0xff << (8 - bitsLeft)) & 0xff;
    bytes[i] = (ip.bytes[i] as number) & mask;
  }
  return { version: ip.version, bytes };
}

/** The network an address belongs to for per-network limits: its /24 (IPv4) or /64 (IPv6). */
export function networkKeyOf(ip: ParsedIp): string {
  const prefixLength = ip.version === 4 ? ipv4NetworkPrefixLength : ipv6NetworkPrefixLength;
  return `${formatIp(masked(ip, prefixLength))}/${prefixLength}`;
}

/** `10.0.0.0/8`, `2001:db8::/32`, or a bare address (a /32 or /128). Undefined if malformed. */
export function parseCidr(text: string): Cidr | undefined {
  const slash = text.indexOf('/');
  const ip = parseIp(slash === -1 ? text : text.slice(0, slash));
  if (!ip) return undefined;
  const bitsMax = ip.version === 4 ? 32 : 128;
  let prefixLength = bitsMax;
  if (slash !== -1) {
    const prefixText = text.slice(slash + 1);
    if (!/^\d{1,3}$/.test(prefixText)) return undefined;
    prefixLength = Number(prefixText);
    // "::ffff:10.0.0.0/104" is an IPv4 /8 written as IPv6.
    if (ip.version === 4 && text.includes(':')) prefixLength -= 96;
    if (prefixLength < 0 || prefixLength > bitsMax) return undefined;
  }
  return { version: ip.version, bytes: masked(ip, prefixLength).bytes, prefixLength };
}

export function cidrContains(cidr: Cidr, ip: ParsedIp): boolean {
  if (cidr.version !== ip.version) return false;
  const candidate = masked(ip, cidr.prefixLength).bytes;
  for (let i = 0; i < candidate.length; i++) if (candidate[i] !== cidr.bytes[i]) return false;
  return true;
}

export class InvalidTrustedProxyError extends Error {
  constructor(readonly entries: readonly string[]) {
    super(`not an IP address or CIDR: ${entries.join(', ')}`);
    this.name = 'InvalidTrustedProxyError';
  }
}

/**
 * Decides the client address of a request. Build once at start-up (the CIDR list is parsed and
 * checked here), call `resolve` per request.
 */
export class ClientAddressResolver {
  private readonly trusted: readonly Cidr[];
  /**
   * Socket address → its client address, for requests whose answer depends on nothing else (no
   * X-Forwarded-For to walk): parsing and formatting an address is ~1 µs, and a node sees the same
   * peers (its load balancers, or the same viewers) over and over. Emptied when full.
   */
  private readonly bySocketIp = new Map<string, ClientAddress>();

  /** @throws InvalidTrustedProxyError naming every entry that is not an address or CIDR. */
  constructor(trustedProxies: readonly string[]) {
    const bad: string[] = [];
    const trusted: Cidr[] = [];
    for (const entry of trustedProxies) {
      const cidr = parseCidr(entry.trim());
      if (cidr) trusted.push(cidr);
      else bad.push(entry);
    }
    if (bad.length > 0) throw new InvalidTrustedProxyError(bad);
    this.trusted = trusted;
  }

  /** Whether X-Forwarded-For can matter at all: read the header only when this is true. */
  get honoursForwardedFor(): boolean {
    return this.trusted.length > 0;
  }

  isTrusted(ip: ParsedIp): boolean {
    for (const cidr of this.trusted) if (cidrContains(cidr, ip)) return true;
    return false;
  }

  /** The client address of a request with no X-Forwarded-For: the socket's own, memoised. */
  private socketAddress(socketIp: string): ClientAddress | undefined {
    const known = this.bySocketIp.get(socketIp);
    if (known !== undefined) return known;
    const socket = parseIp(socketIp);
    if (!socket) return undefined;
    const address = toClientAddress(socket, false);
    if (this.bySocketIp.size >= socketAddressCacheEntriesMax) this.bySocketIp.clear();
    this.bySocketIp.set(socketIp, address);
    return address;
  }

  /**
   * `socketIp` as uWS prints it (`res.getRemoteAddressAsText()`), `forwardedFor` the raw header
   * ('' when absent). Returns undefined only when the socket address itself is unreadable, which
   * a real socket never produces; callers treat that as a bad request.
   */
  resolve(socketIp: string, forwardedFor: string): ClientAddress | undefined {
    if (forwardedFor === '') return this.socketAddress(socketIp);
    const socket = parseIp(socketIp);
    if (!socket) return undefined;
    if (!this.isTrusted(socket)) return toClientAddress(socket, false);
    // The socket peer is our proxy: walk its header from the right while hops are our proxies too.
    const truncated = forwardedFor.length > forwardedForLengthMax;
    const hops = (truncated ? forwardedFor.slice(-forwardedForLengthMax) : forwardedFor).split(',');
    // A cut can leave half an address that still parses ("10.0.0.9" → "0.0.0.9"): drop it.
    if (truncated) hops.shift();
    let closest: ParsedIp = socket;
    let forwarded = false;
    const stopAt = Math.max(0, hops.length - forwardedForHopsMax);
    for (let i = hops.length - 1; i >= stopAt; i--) {
      const hop = parseIp(hops[i] as string);
      // A hop a trusted proxy wrote is always an address; garbage means the text came from the
      // client, so the closest address we can vouch for is the one before it.
      if (!hop) break;
      closest = hop;
      forwarded = true;
      if (!this.isTrusted(hop)) break;
    }
    return toClientAddress(closest, forwarded);
  }
}

function toClientAddress(ip: ParsedIp, forwarded: boolean): ClientAddress {
  // Frozen: resolve() hands the same object to many requests.
  return Object.freeze({ version: ip.version, ip: formatIp(ip), networkKey: networkKeyOf(ip), forwarded });
}

/** Canonical address and network of one IP text (tests, fraud tooling); undefined if malformed. */
export function clientAddressOf(text: string): ClientAddress | undefined {
  const ip = parseIp(text);
  return ip ? toClientAddress(ip, false) : undefined;
}
