import {
  type HandlerContext,
  type Provider,
  type RunningUpstream,
  sendJson,
  startSse,
  startUpstream,
  streamDeltas,
  type UpstreamOptions,
} from './common.ts';

/**
 * Fake Gemini API (`/v1beta/models/{m}:generateContent`, `:streamGenerateContent?alt=sse`).
 * Google accepts the key as `x-goog-api-key` or `?key=`; this fake does too, so a test can
 * see whether a client-supplied `?key=` slipped through.
 */
const MODEL_RE = /^\/v1beta\/models\/([^/:]+):(generateContent|streamGenerateContent)$/;

const gemini: Provider = {
  name: 'gemini',
  echoHeader: 'x-goog-api-key',
  credential: (r) =>
    r.credentials.find((c) => c.where === 'x-goog-api-key')?.value ??
    r.credentials.find((c) => c.where === '?key')?.value ??
    null,
  authError: () => ({
    status: 400,
    body: {
      error: {
        code: 400,
        message: 'API key not valid. Please pass a valid API key.',
        status: 'INVALID_ARGUMENT',
        details: [
          {
            '@type': 'type.googleapis.com/google.rpc.ErrorInfo',
            reason: 'API_KEY_INVALID',
            domain: 'googleapis.com',
          },
        ],
      },
    },
  }),
  notFound: () => ({
    status: 404,
    body: { error: { code: 404, message: 'Not Found', status: 'NOT_FOUND' } },
  }),
  async handle(ctx: HandlerContext) {
    const { record, res } = ctx;
    const m = record.method === 'POST' ? MODEL_RE.exec(record.path) : null;
    if (!m) {
      const e = gemini.notFound();
      sendJson(res, record, e.status, e.body);
      return;
    }
    const model = m[1]!;
    const n = ctx.options.chunks ?? 3;
    const part = (text: string, last: boolean) => ({
      candidates: [
        {
          content: { parts: [{ text }], role: 'model' },
          index: 0,
          ...(last ? { finishReason: 'STOP' } : {}),
        },
      ],
      usageMetadata: { promptTokenCount: 10, candidatesTokenCount: n, totalTokenCount: 10 + n },
      modelVersion: model,
    });
    if (m[2] === 'generateContent') {
      sendJson(res, record, 200, part(Array.from({ length: n }, (_, i) => `chunk ${i} `).join(''), true));
      return;
    }
    if (!new URLSearchParams(record.search).has('alt', 'sse')) {
      // Without alt=sse Gemini streams a JSON array; the proxy tests use SSE, as OpenClaw does.
      sendJson(res, record, 200, [part('chunk 0 ', true)]);
      return;
    }
    startSse(res, record);
    await streamDeltas(ctx, n, (i) => `data: ${JSON.stringify(part(`chunk ${i} `, i === n - 1))}\r\n\r\n`);
    res.end();
  },
};

export function start(options: UpstreamOptions = {}): Promise<RunningUpstream> {
  return startUpstream(gemini, options);
}
