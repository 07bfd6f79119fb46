import { describe, expect, it } from 'vitest';
import {
  ClientAddressResolver,
  clientAddressOf,
  formatIp,
  InvalidTrustedProxyError,
  networkKeyOf,
  parseCidr,
  parseIp,
  cidrContains,
} from './clientAddress.ts';

function canonical(text: string): string | undefined {
  const ip = parseIp(text);
  return ip ? formatIp(ip) : undefined;
}

describe('parseIp / formatIp', () => {
  it.each([
    ['1.2.3.4', '1.2.3.4'],
    [' 10.0.0.1 ', '10.0.0.1'],
    ['255.255.255.255', '255.255.255.255'],
    ['1.2.3.4:5678', '1.2.3.4'],
    ['::1', '::1'],
    ['::', '::'],
    ['2001:DB8::1', '2001:db8::1'],
    ['2001:0db8:0000:0000:0000:0000:0000:0001', '2001:db8::1'],
    ['2001:db8:0:0:1:0:0:1', '2001:db8::1:0:0:1'],
    ['2001:db8:0:1:1:1:1:1', '2001:db8:0:1:1:1:1:1'],
    ['fe80::1%eth0', 'fe80::1'],
    ['[2001:db8::1]:443', '2001:db8::1'],
    ['[::1]', '::1'],
    // IPv4-mapped IPv6 is the IPv4 client it carries, in every spelling.
    ['::ffff:1.2.3.4', '1.2.3.4'],
    ['::FFFF:1.2.3.4', '1.2.3.4'],
    ['::ffff:0102:0304', '1.2.3.4'],
    ['0000:0000:0000:0000:0000:ffff:7f00:0001', '127.0.0.1'],
    ['[::ffff:10.1.2.3]:80', '10.1.2.3'],
    ['::1.2.3.4', '::102:304'],
  ])('%s → %s', (input, expected) => {
    expect(canonical(input)).toBe(expected);
  });

  it.each([
    '', ' ', 'localhost', '1.2.3', '1.2.3.4.5', '256.1.1.1', '01.2.3.4', '1.2.3.-1', '1..2.3',
    '1:2:3:4:5:6:7:8:9', '1::2::3', '12345::1', 'g::1', '1:2:3:4:5:6:7', ':1:2:3:4:5:6:7', '1.2.3.4::',
    '::ffff:1.2.3.256', '[::1', '[::1]x', '1.2.3.4:port', 'x'.repeat(100), '::1:2:3:4:5:6:7:8',
  ])('refuses %j', (input) => {
    expect(parseIp(input)).toBeUndefined();
  });
});

describe('networkKeyOf', () => {
  it('is the /24 for IPv4 and the /64 for IPv6', () => {
    expect(networkKeyOf(parseIp('203.0.113.77')!)).toBe('203.0.113.0/24');
    expect(networkKeyOf(parseIp('::ffff:203.0.113.77')!)).toBe('203.0.113.0/24');
    expect(networkKeyOf(parseIp('2001:db8:aa:bb:1:2:3:4')!)).toBe('2001:db8:aa:bb::/64');
    expect(networkKeyOf(parseIp('2001:db8::1')!)).toBe('2001:db8::/64');
  });

  it('gives one key to every address of a /64 however it is written', () => {
    const keys = new Set(['2001:db8:1:2::1', '2001:DB8:1:2:ffff:ffff:ffff:ffff', '2001:0db8:0001:0002:0:0:0:9'].map((t) => clientAddressOf(t)!.networkKey));
    expect([...keys]).toEqual(['2001:db8:1:2::/64']);
  });
});

describe('parseCidr / cidrContains', () => {
  it('parses prefixes and bare addresses', () => {
    expect(parseCidr('10.0.0.0/8')).toMatchObject({ version: 4, prefixLength: 8 });
    expect(parseCidr('10.1.2.3')).toMatchObject({ version: 4, prefixLength: 32 });
    expect(parseCidr('2001:db8::/32')).toMatchObject({ version: 6, prefixLength: 32 });
    expect(parseCidr('::1')).toMatchObject({ version: 6, prefixLength: 128 });
    expect(parseCidr('::ffff:10.0.0.0/104')).toMatchObject({ version: 4, prefixLength: 8 });
    for (const bad of ['10.0.0.0/33', '2001:db8::/129', '10.0.0.0/', '10.0.0.0/a', 'nope/8']) expect(parseCidr(bad)).toBeUndefined();
  });

  it('matches only addresses inside the prefix and of the same family', () => {
    const ten = parseCidr('10.0.0.0/8')!;
    expect(cidrContains(ten, parseIp('10.255.1.2')!)).toBe(true);
    expect(cidrContains(ten, parseIp('::ffff:10.9.9.9')!)).toBe(true);
    expect(cidrContains(ten, parseIp('11.0.0.1')!)).toBe(false);
    expect(cidrContains(ten, parseIp('::a00:1')!)).toBe(false);
    const odd = parseCidr('192.168.0.0/23')!;
    expect(cidrContains(odd, parseIp('192.168.1.200')!)).toBe(true);
    expect(cidrContains(odd, parseIp('192.168.2.1')!)).toBe(false);
  });
});

describe('ClientAddressResolver', () => {
  it('answers a repeated socket address from its cache with the same, frozen answer, also past the cache size', () => {
    const resolver = new ClientAddressResolver([]);
    const first = resolver.resolve('203.0.113.7', '');
    expect(first).toEqual({ version: 4, ip: '203.0.113.7', networkKey: '203.0.113.0/24', forwarded: false });
    expect(resolver.resolve('203.0.113.7', '')).toBe(first);
    expect(Object.isFrozen(first)).toBe(true);
    for (let i = 0; i < 12_000; i++) resolver.resolve(`10.${(i >> 8) & 255}.${i & 255}.1`, '');
    expect(resolver.resolve('203.0.113.7', '')).toEqual(first);
    expect(resolver.resolve('10.0.5.1', '')?.networkKey).toBe('10.0.5.0/24');
    expect(resolver.resolve('not an address', '')).toBeUndefined();
  });


  it('uses the socket and ignores X-Forwarded-For when no proxy is trusted', () => {
    const resolver = new ClientAddressResolver([]);
    expect(resolver.honoursForwardedFor).toBe(false);
    expect(resolver.resolve('198.51.100.7', '1.1.1.1')).toEqual({ version: 4, ip: '198.51.100.7', networkKey: '198.51.100.0/24', forwarded: false });
  });

  it('ignores the header when the socket peer is not a trusted proxy', () => {
    const resolver = new ClientAddressResolver(['10.0.0.0/8']);
    expect(resolver.resolve('198.51.100.7', '1.1.1.1')?.ip).toBe('198.51.100.7');
  });

  it('takes the right-most untrusted hop, so a forged left part changes nothing', () => {
    const resolver = new ClientAddressResolver(['10.0.0.0/8', '2001:db8:ffff::/48']);
    expect(resolver.resolve('10.0.0.1', '203.0.113.9')).toEqual({ version: 4, ip: '203.0.113.9', networkKey: '203.0.113.0/24', forwarded: true });
    expect(resolver.resolve('10.0.0.1', '6.6.6.6, 203.0.113.9, 10.0.0.2')?.ip).toBe('203.0.113.9');
    expect(resolver.resolve('::ffff:10.0.0.1', 'spoofed, 2001:db8:1::5, 2001:db8:ffff::1')?.ip).toBe('2001:db8:1::5');
  });

  it('stops at garbage and keeps the closest address it can vouch for', () => {
    const resolver = new ClientAddressResolver(['10.0.0.0/8']);
    expect(resolver.resolve('10.0.0.1', 'not-an-ip, 10.0.0.2')).toMatchObject({ ip: '10.0.0.2', forwarded: true });
    expect(resolver.resolve('10.0.0.1', 'garbage')).toMatchObject({ ip: '10.0.0.1', forwarded: false });
  });

  it('takes the left-most hop when every hop is a trusted proxy', () => {
    const resolver = new ClientAddressResolver(['10.0.0.0/8']);
    expect(resolver.resolve('10.0.0.1', '10.0.0.3, 10.0.0.2')?.ip).toBe('10.0.0.3');
  });

  it('walks a bounded number of hops however long the header', () => {
    const resolver = new ClientAddressResolver(['10.0.0.0/8']);
    const header = `${'1.1.1.1, '.repeat(10_000)}${'10.0.0.9, '.repeat(100)}10.0.0.2`;
    const address = resolver.resolve('10.0.0.1', header);
    expect(address?.ip).toBe('10.0.0.9');
  });

  it('reads the IPv4-mapped long form uWS prints for IPv4 sockets', () => {
    const resolver = new ClientAddressResolver([]);
    expect(resolver.resolve('0000:0000:0000:0000:0000:ffff:c633:6407', '')?.ip).toBe('198.51.100.7');
  });

  it('refuses a bad trusted proxy list, naming every bad entry', () => {
    expect(() => new ClientAddressResolver(['10.0.0.0/8', 'proxy.local', '1.2.3.4/40'])).toThrow(InvalidTrustedProxyError);
    try {
      new ClientAddressResolver(['proxy.local', '1.2.3.4/40']);
    } catch (error) {
      expect((error as InvalidTrustedProxyError).entries).toEqual(['proxy.local', '1.2.3.4/40']);
    }
  });

  it('answers undefined for an unreadable socket address', () => {
    expect(new ClientAddressResolver([]).resolve('', '')).toBeUndefined();
  });
});
