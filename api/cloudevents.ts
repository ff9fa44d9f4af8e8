/**
 * CloudEvents 1.0 at `POST /v1/events`, so senders built for other metering products switch
 * by changing a URL. Structured mode (`application/cloudevents+json`: one event) and batch mode
 * (`application/cloudevents-batch+json`: an array). The mapping:
 *
 *   id          -> event_id
 *   type        -> event_type (mcp.tool_invoked, api.request, session.completed, ...)
 *   time        -> recorded_timestamp (the time it arrives when absent)
 *   apikey      -> api_key     (extension attributes; without either, `subject` is the credential:
 *   clientid    -> client_id    a client id when it starts with cli_, an API key otherwise)
 *   data        -> the other fields (tool_name, input_tokens, session_id, ...); `data_base64`
 *                  holding JSON is read the same way
 *
 * `id` is the event_id as it is: one event per id and tenant, whatever its `source` (a request
 * holding one id from two sources is refused; across requests the later is a duplicate, never
 * billed), so a sender with several sources keeps ids unique across them (e.g. prefixed by the
 * source). `apikey` and `clientid` are strings, as `subject` is.
 *
 * `source`, `dataschema` and other extension attributes are accepted and not kept. A request is
 * all or nothing: any CloudEvent that is not valid, or maps to an invalid event, answers 400 with
 * every problem by its JSON path in the request (`$[2].data.input_tokens`, `$.time`).
 * Pure: content type and parsed body in, wire events (or problems) out.
 */

const CLOUDEVENTS_TYPE = 'application/cloudevents+json';
const CLOUDEVENTS_BATCH_TYPE = 'application/cloudevents-batch+json';

export type CloudEventsMode = 'structured' | 'batch';

export interface CloudEventProblem {
  path: string;
  message: string;
}

/** Where each wire field of one mapped event came from, as a JSON path into the request. */
export type FieldOrigins = Record<string, string>;

export type CloudEventsMapping =
  | { ok: true; value: Record<string, unknown>[]; origins: FieldOrigins[] }
  | { ok: false; status: 400; code: string; message: string; details: CloudEventProblem[] };

const ENVELOPE_FIELDS = ['event_id', 'event_type', 'recorded_timestamp', 'api_key', 'client_id'] as const;
const RFC3339 = /^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$/;
const EXTENSION_NAME = /^[a-z0-9]{1,20}$/;
const JSON_DATA_TYPE = /^application\/(?:[\w.+-]*\+)?json\s*(?:;|$)/i;

/** The CloudEvents mode of a content type, or undefined for anything else. */
export function cloudEventsMode(contentType: string | undefined): CloudEventsMode | undefined {
  const type = (contentType ?? '').split(';')[0].trim().toLowerCase();
  if (type === CLOUDEVENTS_TYPE) return 'structured';
  if (type === CLOUDEVENTS_BATCH_TYPE) return 'batch';
  return undefined;
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function nonEmptyString(value: unknown): value is string {
  return typeof value === 'string' && value.length > 0;
}

/** Maps the body of a CloudEvents request to wire events, each with the origin of its fields. */
export function fromCloudEvents(mode: CloudEventsMode, body: unknown, options: { maxBatch: number; now: number }): CloudEventsMapping {
  const fail = (message: string, details: CloudEventProblem[]): CloudEventsMapping => ({ ok: false, status: 400, code: 'validation_failed', message, details });
  let items: { value: unknown; path: string }[];
  if (mode === 'structured') {
    if (!isRecord(body)) return fail('a structured CloudEvent must be a JSON object', [{ path: '$', message: 'expected a CloudEvent object' }]);
    items = [{ value: body, path: '$' }];
  } else {
    if (!Array.isArray(body)) return fail('a CloudEvents batch must be a JSON array', [{ path: '$', message: 'expected an array of CloudEvents' }]);
    if (body.length === 0) return { ok: false, status: 400, code: 'empty_batch', message: 'the batch holds no CloudEvents', details: [] };
    items = body.map((value, i) => ({ value, path: `$[${i}]` }));
  }
  if (items.length > options.maxBatch) {
    return { ok: false, status: 400, code: 'batch_too_large', message: `${items.length} events in one request; at most ${options.maxBatch} are accepted`, details: [] };
  }
  const events: Record<string, unknown>[] = [];
  const origins: FieldOrigins[] = [];
  const problems: CloudEventProblem[] = [];
  // The id is the event_id: the same id from another source would be taken for a duplicate (never billed).
  const sources = items.length > 1 ? new Map<string, { source: string; path: string }>() : undefined;
  for (const { value, path } of items) {
    if (sources && isRecord(value) && nonEmptyString(value.id) && nonEmptyString(value.source)) {
      const first = sources.get(value.id);
      if (!first) sources.set(value.id, { source: value.source, path });
      else if (first.source !== value.source) {
        problems.push({
          path: `${path}.id`,
          message: `${JSON.stringify(value.id)} is also the id of ${first.path} from source ${JSON.stringify(first.source)}: the id is the event_id, unique per tenant across sources (a second event with it is a duplicate, never billed); give each event its own id`,
        });
      }
    }
    const mapped = mapOne(value, path, options.now);
    if ('problems' in mapped) problems.push(...mapped.problems);
    else {
      events.push(mapped.event);
      origins.push(mapped.origins);
    }
  }
  if (problems.length) return fail(describe(problems), problems);
  return { ok: true, value: events, origins };
}

function mapOne(value: unknown, path: string, now: number): { event: Record<string, unknown>; origins: FieldOrigins } | { problems: CloudEventProblem[] } {
  if (!isRecord(value)) return { problems: [{ path, message: 'expected a CloudEvent object' }] };
  const problems: CloudEventProblem[] = [];
  const at = (name: string) => `${path}.${name}`;
  if (value.specversion !== '1.0') problems.push({ path: at('specversion'), message: `must be "1.0", got ${JSON.stringify(value.specversion)}` });
  for (const name of ['id', 'source', 'type'] as const) {
    if (!nonEmptyString(value[name])) problems.push({ path: at(name), message: 'a non-empty string is required' });
  }
  if (value.time !== undefined && !(typeof value.time === 'string' && RFC3339.test(value.time) && !Number.isNaN(Date.parse(value.time)))) {
    problems.push({ path: at('time'), message: 'must be an RFC 3339 timestamp, e.g. 2026-11-26T14:26:59.045Z' });
  }
  for (const name of ['subject', 'apikey', 'clientid'] as const) {
    if (value[name] !== undefined && typeof value[name] !== 'string') problems.push({ path: at(name), message: 'must be a string' });
  }
  if (value.datacontenttype !== undefined && !(typeof value.datacontenttype === 'string' && JSON_DATA_TYPE.test(value.datacontenttype))) {
    problems.push({ path: at('datacontenttype'), message: 'data must be JSON (application/json or a +json type)' });
  }
  for (const name of Object.keys(value)) {
    if (!['data', 'data_base64'].includes(name) && !EXTENSION_NAME.test(name)) {
      problems.push({ path: at(name), message: 'attribute names are lowercase letters and digits, at most 20 characters' });
    }
  }

  let data: unknown = value.data;
  let dataPath = at('data');
  if (value.data_base64 !== undefined) {
    dataPath = at('data_base64');
    if (value.data !== undefined) problems.push({ path: dataPath, message: 'send data or data_base64, not both' });
    else {
      try {
        data = JSON.parse(Buffer.from(String(value.data_base64), 'base64').toString('utf8'));
      } catch {
        problems.push({ path: dataPath, message: 'must be base64 of a JSON object' });
      }
    }
  }
  if (data === undefined) data = {};
  if (!isRecord(data)) problems.push({ path: dataPath, message: 'must be a JSON object of event fields' });
  else {
    for (const field of ENVELOPE_FIELDS) {
      if (Object.hasOwn(data, field)) problems.push({ path: `${dataPath}.${field}`, message: `comes from the CloudEvent itself (${envelopeSource(field)}), not from data` });
    }
  }

  const credentialFrom = value.apikey !== undefined ? 'apikey' : value.clientid !== undefined ? 'clientid' : value.subject !== undefined ? 'subject' : undefined;
  if (value.apikey !== undefined && value.clientid !== undefined) problems.push({ path: at('clientid'), message: 'send either apikey or clientid, not both' });
  if (credentialFrom === undefined) problems.push({ path: at('subject'), message: 'the credential is required: an apikey or clientid extension attribute, or subject' });
  if (problems.length) return { problems };

  const credential = value[credentialFrom!] as string;
  const asClient = credentialFrom === 'clientid' || (credentialFrom === 'subject' && credential.startsWith('cli_'));
  const event: Record<string, unknown> = {
    ...(data as Record<string, unknown>),
    event_id: value.id,
    event_type: value.type,
    recorded_timestamp: typeof value.time === 'string' ? value.time : new Date(now).toISOString(),
    [asClient ? 'client_id' : 'api_key']: credential,
  };
  const origins: FieldOrigins = { event_id: at('id'), event_type: at('type'), recorded_timestamp: at('time'), api_key: at(credentialFrom!), client_id: at(credentialFrom!) };
  for (const field of Object.keys(data as object)) origins[field] = `${dataPath}.${field}`;
  return { event, origins };
}

function envelopeSource(field: (typeof ENVELOPE_FIELDS)[number]): string {
  return { event_id: 'id', event_type: 'type', recorded_timestamp: 'time', api_key: 'apikey or subject', client_id: 'clientid or subject' }[field];
}

/**
 * The JSON path of a field error of a mapped event (a dotted field as ingest's validation names
 * it, '' for the event itself) in the CloudEvents request.
 */
export function cloudEventPath(origins: FieldOrigins, field: string, eventPath: string): string {
  if (field === '') return eventPath;
  const [head, ...rest] = field.split('.');
  const base = origins[head] ?? `${eventPath}.data.${head}`;
  return rest.length ? `${base}.${rest.join('.')}` : base;
}

/** The 400 reply's details for events ingest rejected, by their JSON path in the request. */
export function cloudEventsRejection(
  mode: CloudEventsMode,
  origins: FieldOrigins[],
  rejected: readonly { index: number; errors: readonly { field: string; message: string }[] }[],
): { message: string; details: CloudEventProblem[] } {
  const details = rejected.flatMap(({ index, errors }) => {
    const eventPath = mode === 'structured' ? '$' : `$[${index}]`;
    return errors.map((e) => ({ path: cloudEventPath(origins[index], e.field, eventPath), message: e.message }));
  });
  return { message: describe(details), details };
}

function describe(problems: CloudEventProblem[]): string {
  const shown = problems.slice(0, 3).map((p) => `${p.path}: ${p.message}`).join('; ');
  return `invalid CloudEvent${problems.length > 1 ? 's' : ''}, nothing was accepted: ${shown}${problems.length > 3 ? `; and ${problems.length - 3} more` : ''}`;
}
