import { describe, expect, it } from 'vitest';
import { adminWorld } from '../api/admin/test-world.js';
import { isPrivateAddress, webhookUrlProblem } from './webhooks.js';

const t = adminWorld('domain-webhooks');

describe('isPrivateAddress', () => {
  it('knows loopback, private, link-local, CGNAT, unspecified, multicast and reserved addresses, IPv4 and IPv6', () => {
    for (const address of [
      '0.0.0.0',
      '10.1.2.3',
      '127.0.0.1',
      '127.255.0.9',
      '100.64.0.1',
      '100.127.255.254',
      '169.254.169.254',
      '172.16.0.1',
      '172.31.255.255',
      '192.168.0.10',
      '198.18.0.1',
      '198.19.255.255',
      '224.0.0.1',
      '240.0.0.1',
      '255.255.255.255',
      '::',
      '::1',
      '0:0:0:0:0:0:0:1',
      'fc00::1',
      'fd12:3456::1',
      'fe80::1',
      'fe80::1%eth0',
      'febf::1',
      'fec0::1',
      'ff02::1',
      'FF05::2',
      '100::1',
      '2001:db8::1',
      '64:ff9b:1::a00:1',
    ]) {
      expect(isPrivateAddress(address), address).toBe(true);
    }
  });

  it('judges an IPv6 address that embeds an IPv4 one by that address, in any notation', () => {
    for (const address of [
      // IPv4-mapped: dotted, and as the URL parser writes it (http://[::ffff:127.0.0.1]/ has host [::ffff:7f00:1]).
      '::ffff:127.0.0.1',
      '::ffff:7f00:1',
      '::FFFF:7F00:0001',
      '0:0:0:0:0:ffff:7f00:1',
      '::ffff:a9fe:a9fe',
      '::ffff:10.0.0.1',
      '::ffff:c0a8:1',
      // IPv4-translated (::ffff:0:0:0/96).
      '::ffff:0:7f00:1',
      // IPv4-compatible (::/96).
      '::127.0.0.1',
      '::7f00:1',
      '::a9fe:a9fe',
      // NAT64 (64:ff9b::/96).
      '64:ff9b::7f00:1',
      '64:ff9b::127.0.0.1',
      '64:ff9b::a9fe:a9fe',
      '64:ff9b::c0a8:101',
      // 6to4 (2002::/16): the IPv4 address in bits 16 to 48.
      '2002:7f00:1::',
      '2002:a9fe:a9fe::1',
      '2002:c0a8:101:0:0:0:0:1',
      // Teredo (2001::/32): the client's address inverted in the last 32 bits (127.0.0.1 -> 80ff:fffe).
      '2001:0:4136:e378:8000:63bf:80ff:fffe',
    ]) {
      expect(isPrivateAddress(address), address).toBe(true);
    }
  });

  it('takes public addresses, an embedded public IPv4 one included', () => {
    for (const address of [
      '8.8.8.8',
      '93.184.215.14',
      '100.63.255.255',
      '100.128.0.0',
      '172.15.255.255',
      '172.32.0.0',
      '169.253.1.1',
      '192.169.0.1',
      '223.255.255.255',
      '2606:4700:4700::1111',
      '2a00:1450:4001:82b::200e',
      '::ffff:8.8.8.8',
      '::ffff:808:808',
      '64:ff9b::808:808',
      '2002:808:808::1',
      // Groups that merely start with the letters of a private prefix: 00fc::, 0fe8::, 00ff::.
      'fc::1',
      'fe8::1',
      'ff::1',
    ]) {
      expect(isPrivateAddress(address), address).toBe(false);
    }
  });

  it('is false for what is not an address', () => {
    for (const text of ['', 'localhost', 'hooks.example.com', '127.0.0.1.nip.io', '::ffff:127.0.0.1:80', '1.2.3']) expect(isPrivateAddress(text), text).toBe(false);
  });
});

describe('webhookUrlProblem', () => {
  const forbid = { allowPrivateNetworks: false };

  it('refuses private addresses however the URL writes them', () => {
    for (const url of [
      'http://[::ffff:127.0.0.1]/',
      'http://[::ffff:7f00:1]:8080/hook',
      'http://[::127.0.0.1]/',
      'http://[64:ff9b::127.0.0.1]/',
      'http://[64:ff9b::a9fe:a9fe]/latest/meta-data',
      'http://[2002:7f00:1::]/',
      'http://[::ffff:169.254.169.254]/',
      'http://[0:0:0:0:0:0:0:1]/',
      'http://0x7f.1/',
      'http://2130706433/',
    ]) {
      expect(webhookUrlProblem(url, forbid), url).toMatch(/is a private-network address, and this deployment forbids them/);
    }
  });

  it('reads a host name without its trailing dots', () => {
    for (const url of ['http://localhost./', 'http://LOCALHOST./hook', 'http://localhost../', 'http://api.localhost./', 'http://127.0.0.1./']) {
      expect(webhookUrlProblem(url, forbid), url).toMatch(/^(localhost|api\.localhost|127\.0\.0\.1) is a private-network address/);
    }
    expect(webhookUrlProblem('https://hooks.example.com./x', forbid)).toBeUndefined();
  });

  it('takes them all when the operator allows private networks', () => {
    for (const url of ['http://[::ffff:127.0.0.1]/', 'http://localhost./', 'http://[64:ff9b::7f00:1]/']) {
      expect(webhookUrlProblem(url, { allowPrivateNetworks: true }), url).toBeUndefined();
    }
  });
});

describe('POST /v1/admin/webhook-endpoints', () => {
  const refusedPaths = async (url: string) => {
    const reply = await t.a.call('POST', '/v1/admin/webhook-endpoints', { url, event_types: ['cap.paused'] });
    expect(reply.status, `${url}: ${JSON.stringify(reply.body)}`).toBe(400);
    expect(reply.body.error.code).toBe('validation_failed');
    return reply.body.error.details.map((d: { path: string }) => d.path);
  };

  it('refuses an IPv6 URL that embeds a private IPv4 address (mapped, compatible, NAT64, 6to4), with the JSON path', async () => {
    for (const url of [
      'http://[::ffff:127.0.0.1]/hook',
      'http://[::ffff:7f00:1]:8080/hook',
      'http://[::ffff:169.254.169.254]/latest/meta-data',
      'http://[::127.0.0.1]/hook',
      'http://[64:ff9b::7f00:1]/hook',
      'http://[2002:7f00:1::]/hook',
      'http://[2002:a9fe:a9fe::]/hook',
    ]) {
      expect(await refusedPaths(url), url).toEqual(['url']);
    }
  });

  it('refuses localhost written with a trailing dot, with the JSON path', async () => {
    for (const url of ['http://localhost./hook', 'http://localhost.:8080/hook', 'http://api.localhost./hook']) {
      expect(await refusedPaths(url), url).toEqual(['url']);
    }
  });

  it('still takes a public IPv6 address, and a public IPv4 address written as IPv6', async () => {
    for (const url of ['https://[2606:4700:4700::1111]/hook', 'https://[::ffff:8.8.8.8]/hook', 'https://[64:ff9b::808:808]/hook']) {
      const reply = await t.a.call('POST', '/v1/admin/webhook-endpoints', { url, event_types: ['cap.paused'] });
      expect(reply.status, `${url}: ${JSON.stringify(reply.body)}`).toBe(201);
    }
  });
});
