// The Worker that tests/workerd/main.rs runs in a real workerd, with the genuine AI binding
// (`cloudflare-internal:ai-api`) and Vectorize binding (`cloudflare-internal:vectorize-api`)
// wired to Kiln. Each route makes one `env.AI` or `env.VECTORIZE` call from the POSTed JSON and
// answers with what the Worker saw; a thrown error becomes status 599 {error: {name, message}}.

function bytesOf(base64) {
  return Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
}

async function call(path, body, env) {
  switch (path) {
    case '/health':
      return { ok: true };
    case '/run': {
      const output = await env.AI.run(body.model, body.inputs, body.options ?? {});
      const seen = {
        requestId: env.AI.lastRequestId,
        logId: env.AI.aiGatewayLogId,
        status: env.AI.lastRequestHttpStatusCode,
      };
      if (output instanceof ReadableStream) {
        return { ...seen, stream: await new Response(output).text() };
      }
      return { ...seen, result: output };
    }
    case '/run/stream': {
      // The file as a stream input, `{body, contentType}`, as Workers pass uploads on.
      const file = { body: new Blob([bytesOf(body.file)]).stream(), contentType: body.contentType };
      const output = await env.AI.run(body.model, { ...body.inputs, [body.field]: file });
      return { result: output };
    }
    case '/vectorize': {
      // `method` of env.VECTORIZE with `args`: describe, insert, upsert, query, queryById, …
      const result = await env.VECTORIZE[body.method](...(body.args ?? []));
      return { result: result ?? null };
    }
    case '/models':
      return { result: body.params === undefined ? await env.AI.models() : await env.AI.models(body.params) };
    case '/gateway/url':
      return { url: await env.AI.gateway(body.gateway).getUrl(body.provider) };
    case '/gateway/log': {
      const log = await env.AI.gateway(body.gateway).getLog(body.id);
      return { log, createdAtIsDate: log.created_at instanceof Date, createdAtMs: log.created_at.getTime() };
    }
    case '/gateway/patch':
      return { patched: (await env.AI.gateway(body.gateway).patchLog(body.id, body.patch)) ?? null };
    case '/gateway/run': {
      const response = await env.AI.gateway(body.gateway).run(body.steps, body.options);
      return {
        status: response.status,
        step: response.headers.get('cf-aig-step'),
        logId: response.headers.get('cf-aig-log-id'),
        body: await response.json(),
      };
    }
    default:
      throw new Error(`no test route ${path}`);
  }
}

export default {
  async fetch(request, env) {
    const path = new URL(request.url).pathname;
    const body = request.method === 'POST' ? await request.json() : {};
    try {
      return Response.json(await call(path, body, env));
    } catch (error) {
      return Response.json(
        { error: { name: error.name, message: error.message } },
        { status: 599 },
      );
    }
  },
};
