import { randomUUID } from 'node:crypto';
import {
  type HandlerContext,
  jsonField,
  type Provider,
  type RunningUpstream,
  sendJson,
  startSse,
  startUpstream,
  streamDeltas,
  type UpstreamOptions,
  writeSse,
} from './common.ts';

/** Fake Anthropic Messages API: `x-api-key`, `anthropic-version` required, SSE with `ping` events. */
const sse = (event: string, data: unknown) => `event: ${event}\ndata: ${JSON.stringify(data)}\n\n`;

const anthropic: Provider = {
  name: 'anthropic',
  echoHeader: 'x-api-key',
  credential: (r) => r.credentials.find((c) => c.where === 'x-api-key')?.value ?? null,
  authError: () => ({
    status: 401,
    body: { type: 'error', error: { type: 'authentication_error', message: 'invalid x-api-key' } },
  }),
  notFound: () => ({
    status: 404,
    body: { type: 'error', error: { type: 'not_found_error', message: 'Not found' } },
  }),
  async handle(ctx: HandlerContext) {
    const { record, res } = ctx;
    if (record.method === 'GET' && record.path === '/v1/models') {
      sendJson(res, record, 200, {
        data: [
          {
            type: 'model',
            id: 'claude-fake-1',
            display_name: 'Claude Fake',
            created_at: '2026-01-01T00:00:00Z',
          },
        ],
        has_more: false,
        first_id: 'claude-fake-1',
        last_id: 'claude-fake-1',
      });
      return;
    }
    if (record.method !== 'POST' || record.path !== '/v1/messages') {
      const e = anthropic.notFound();
      sendJson(res, record, e.status, e.body);
      return;
    }
    if (!record.headers['anthropic-version']) {
      sendJson(res, record, 400, {
        type: 'error',
        error: { type: 'invalid_request_error', message: 'anthropic-version: header is required' },
      });
      return;
    }
    const modelField = jsonField(record.json, 'model');
    const model = typeof modelField === 'string' ? modelField : 'claude-fake-1';
    const id = `msg_${randomUUID().replaceAll('-', '')}`;
    const n = ctx.options.chunks ?? 3;
    const usage = { input_tokens: 10, output_tokens: n };
    if (jsonField(record.json, 'stream') !== true) {
      sendJson(res, record, 200, {
        id,
        type: 'message',
        role: 'assistant',
        model,
        content: [{ type: 'text', text: Array.from({ length: n }, (_, i) => `chunk ${i} `).join('') }],
        stop_reason: 'end_turn',
        stop_sequence: null,
        usage,
      });
      return;
    }
    startSse(res, record, { 'request-id': `req_${id}` });
    await writeSse(
      res,
      sse('message_start', {
        type: 'message_start',
        message: {
          id,
          type: 'message',
          role: 'assistant',
          model,
          content: [],
          stop_reason: null,
          usage: { ...usage, output_tokens: 0 },
        },
      }),
    );
    await writeSse(
      res,
      sse('content_block_start', {
        type: 'content_block_start',
        index: 0,
        content_block: { type: 'text', text: '' },
      }),
    );
    await writeSse(res, sse('ping', { type: 'ping' }));
    await streamDeltas(ctx, n, (i) =>
      sse('content_block_delta', {
        type: 'content_block_delta',
        index: 0,
        delta: { type: 'text_delta', text: `chunk ${i} ` },
      }),
    );
    await writeSse(res, sse('content_block_stop', { type: 'content_block_stop', index: 0 }));
    await writeSse(
      res,
      sse('message_delta', {
        type: 'message_delta',
        delta: { stop_reason: 'end_turn', stop_sequence: null },
        usage: { output_tokens: n },
      }),
    );
    await writeSse(res, sse('message_stop', { type: 'message_stop' }));
    res.end();
  },
};

export function start(options: UpstreamOptions = {}): Promise<RunningUpstream> {
  return startUpstream(anthropic, options);
}
