import { describe, expect, it } from 'vitest';
import { classifyBody, outcomeOf, refusalMessage, responseKey, withoutBom } from './jsonrpc.js';
import { SseReader, sseEvent } from './sse.js';

describe('classifyBody', () => {
  it('finds the tools/call requests of one message or a batch, and an initialize', () => {
    const one = classifyBody('{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"search_docs"}}');
    expect(one).toMatchObject({ kind: 'messages', batch: false, calls: [{ id: 1, key: '1', tool: 'search_docs' }], initialize: false });
    const elements = [
      { jsonrpc: '2.0', id: 'a', method: 'tools/call', params: { name: 'x' } },
      { jsonrpc: '2.0', method: 'notifications/initialized' },
      { jsonrpc: '2.0', id: 2, method: 'initialize', params: {} },
      { jsonrpc: '2.0', method: 'tools/call', params: { name: 'a notification is not a call' } },
    ];
    const batch = classifyBody(JSON.stringify(elements));
    expect(batch).toMatchObject({ kind: 'messages', batch: true, initialize: true });
    if (batch.kind === 'messages') expect(batch.calls.map((c) => c.key)).toEqual(['"a"']);
    // One element that is not JSON-RPC (a lax upstream might run it unmetered) makes the whole batch malformed.
    const withInvalid = classifyBody(JSON.stringify([...elements, { id: 3, method: 'tools/call', params: { name: 'no-jsonrpc-field' } }]));
    expect(withInvalid).toEqual({ kind: 'malformed', code: -32600, reason: 'batch element 4 is not a JSON-RPC 2.0 message' });
  });

  it('calls anything that is not JSON-RPC malformed', () => {
    for (const body of ['', 'not json', '42', '[]', '[1,2]', '{"id":1,"method":"tools/call"}', '{"jsonrpc":"1.0","method":"x"}']) {
      expect(classifyBody(body).kind).toBe('malformed');
    }
    // The code the proxy refuses it with: not JSON, or JSON without a JSON-RPC message.
    expect(classifyBody('not json')).toMatchObject({ code: -32700 });
    expect(classifyBody('\ufeff{"jsonrpc":"2.0","id":1,"method":"ping"}')).toMatchObject({ code: -32700 });
    expect(classifyBody('[1,2]')).toMatchObject({ code: -32600 });
  });

  it('reads a body without its leading UTF-8 BOM (and only one)', () => {
    const body = Buffer.from('{"jsonrpc":"2.0","id":1,"method":"ping"}');
    const bom = Buffer.from([0xef, 0xbb, 0xbf]);
    expect(withoutBom(Buffer.concat([bom, body])).equals(body)).toBe(true);
    expect(withoutBom(body)).toBe(body);
    expect(withoutBom(Buffer.concat([bom, bom, body])).equals(Buffer.concat([bom, body]))).toBe(true);
    expect(withoutBom(Buffer.from([0xef, 0xbb]))).toHaveLength(2);
  });
});

describe('responses', () => {
  it('match calls by id (1 and "1" differ) and tell the outcome, with reported usage', () => {
    expect(responseKey({ jsonrpc: '2.0', id: 1, result: {} })).toBe('1');
    expect(responseKey({ jsonrpc: '2.0', id: '1', result: {} })).toBe('"1"');
    expect(responseKey({ jsonrpc: '2.0', id: 1, method: 'sampling/createMessage' })).toBeUndefined();
    expect(responseKey({ jsonrpc: '2.0', method: 'notifications/progress' })).toBeUndefined();
    expect(outcomeOf({ id: 1, result: { content: [], _meta: { 'agentmeter/usage': { input_tokens: 5, output_tokens: 2, model: 'm' } } } })).toEqual({
      status: 'SUCCESS',
      inputTokens: 5,
      outputTokens: 2,
      model: 'm',
    });
    expect(outcomeOf({ id: 1, result: { isError: true, content: [{ type: 'text', text: 'no table' }] } })).toMatchObject({ status: 'FAILED', errorType: 'tool_error', errorMessage: 'no table' });
    expect(outcomeOf({ id: 1, error: { code: -32602, message: 'Unknown tool' } })).toMatchObject({ status: 'FAILED', errorType: 'jsonrpc_-32602' });
    expect(outcomeOf({ id: 1, result: { _meta: { 'agentmeter/usage': { input_tokens: -1 } } } }).inputTokens).toBeUndefined();
  });

  it('answer a refused call with an MCP error result under its own id', () => {
    expect(refusalMessage({ id: 9, key: '9', tool: 'search' }, { allowed: false, code: 'paused', reason: 'cap reached', source: 'api' })).toEqual({
      jsonrpc: '2.0',
      id: 9,
      result: { content: [{ type: 'text', text: 'agentmeter refused search: paused: cap reached' }], isError: true, _meta: { 'agentmeter/refusal': { code: 'paused', reason: 'cap reached' } } },
    });
  });
});

describe('SseReader', () => {
  it('yields the data of each complete event across chunk boundaries and line endings', () => {
    const reader = new SseReader();
    const text = 'event: message\r\nid: 1\r\ndata: {"a":\r\ndata: 1}\r\n\r\n: comment\n\n' + sseEvent({ b: 2 }) + 'data: {"c"';
    const bytes = new TextEncoder().encode(text);
    const out: string[] = [];
    for (let i = 0; i < bytes.length; i += 7) out.push(...reader.push(bytes.subarray(i, i + 7)));
    expect(out).toEqual(['{"a":\n1}', '{"b":2}']);
    expect(reader.push(new TextEncoder().encode(':3}\n\n'))).toEqual(['{"c":3}']);
  });

  it('finds every kind of event end wherever the chunks split it', () => {
    const text = 'data: a\r\n\r\ndata: b\n\ndata: c\r\rdata\ndata:d\r\n\r\n: only a comment\n\ndata: e';
    const bytes = new TextEncoder().encode(text);
    for (let i = 0; i <= bytes.length; i++) {
      const reader = new SseReader();
      expect([...reader.push(bytes.subarray(0, i)), ...reader.push(bytes.subarray(i))], `split at ${i}`).toEqual(['a', 'b', 'c', '\nd']);
      expect(reader.push(new TextEncoder().encode('\n\n'))).toEqual(['e']);
    }
  });

  it('keeps multi-byte characters split between chunks', () => {
    const reader = new SseReader();
    const bytes = new TextEncoder().encode('data: "é✓"\n\n');
    expect([...reader.push(bytes.subarray(0, 8)), ...reader.push(bytes.subarray(8))]).toEqual(['"é✓"']);
  });
});
