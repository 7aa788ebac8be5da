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

/** Fake OpenAI API: `Authorization: Bearer`, chat completions (SSE ending in `[DONE]`), files, models. */
const openai: Provider = {
  name: 'openai',
  echoHeader: 'authorization',
  credential: (r) => {
    const v = r.credentials.find((c) => c.where === 'authorization')?.value;
    return v?.startsWith('Bearer ') ? v.slice(7) : null;
  },
  authError: () => ({
    status: 401,
    body: {
      error: {
        message: 'Incorrect API key provided.',
        type: 'invalid_request_error',
        param: null,
        code: 'invalid_api_key',
      },
    },
  }),
  notFound: () => ({
    status: 404,
    body: { error: { message: 'Invalid URL', type: 'invalid_request_error', param: null, code: null } },
  }),
  async handle(ctx: HandlerContext) {
    const { record, res } = ctx;
    if (record.method === 'GET' && record.path === '/v1/models') {
      sendJson(res, record, 200, {
        object: 'list',
        data: [{ id: 'gpt-fake-1', object: 'model', created: 1, owned_by: 'fake' }],
      });
      return;
    }
    if (record.method === 'POST' && record.path === '/v1/files') {
      // Opaque upload (the body is not parsed): reports the size and digest it received.
      sendJson(res, record, 200, {
        id: `file-${randomUUID()}`,
        object: 'file',
        bytes: record.bodyBytes,
        sha256: record.bodySha256,
        created_at: Math.floor(Date.now() / 1000),
        filename: 'upload',
        purpose: 'batch',
      });
      return;
    }
    if (record.method !== 'POST' || record.path !== '/v1/chat/completions') {
      const e = openai.notFound();
      sendJson(res, record, e.status, e.body);
      return;
    }
    const modelField = jsonField(record.json, 'model');
    const model = typeof modelField === 'string' ? modelField : 'gpt-fake-1';
    const id = `chatcmpl-${randomUUID()}`;
    const created = Math.floor(Date.now() / 1000);
    const n = ctx.options.chunks ?? 3;
    if (jsonField(record.json, 'stream') !== true) {
      sendJson(res, record, 200, {
        id,
        object: 'chat.completion',
        created,
        model,
        choices: [
          {
            index: 0,
            message: {
              role: 'assistant',
              content: Array.from({ length: n }, (_, i) => `chunk ${i} `).join(''),
            },
            finish_reason: 'stop',
          },
        ],
        usage: { prompt_tokens: 10, completion_tokens: n, total_tokens: 10 + n },
      });
      return;
    }
    startSse(res, record, { 'x-request-id': id });
    const chunk = (delta: unknown, finish: string | null) =>
      `data: ${JSON.stringify({ id, object: 'chat.completion.chunk', created, model, choices: [{ index: 0, delta, finish_reason: finish }] })}\n\n`;
    await writeSse(res, chunk({ role: 'assistant', content: '' }, null));
    await streamDeltas(ctx, n, (i) => chunk({ content: `chunk ${i} ` }, null));
    await writeSse(res, chunk({}, 'stop'));
    await writeSse(res, 'data: [DONE]\n\n');
    res.end();
  },
};

export function start(options: UpstreamOptions = {}): Promise<RunningUpstream> {
  return startUpstream(openai, options);
}
