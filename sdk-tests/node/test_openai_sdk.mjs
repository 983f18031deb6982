// Drives Kiln with the official `openai` npm package, unchanged.
// Run by crates/kiln/tests/openai_sdk.rs with KILN_BASE_URL (http://127.0.0.1:PORT) and
// KILN_ACCOUNT set; exits non-zero with a message on the first failed check.

import assert from "node:assert/strict";
import OpenAI from "openai";

const root = process.env.KILN_BASE_URL.replace(/\/$/, "");
const account = process.env.KILN_ACCOUNT ?? "local";
const LLAMA = "@cf/meta/llama-3.1-8b-instruct";
const BGE = "@cf/baai/bge-base-en-v1.5";
const GPT_OSS = "@cf/openai/gpt-oss-20b";
const CAPITAL = [
  { role: "system", content: "You are a helpful assistant." },
  { role: "user", content: "What is the capital of France?" },
];
const bases = [`${root}/v1`, `${root}/client/v4/accounts/${account}/ai/v1`];

function maxDifference(a, b) {
  assert.equal(a.length, b.length);
  return Math.max(...a.map((x, i) => Math.abs(x - b[i])));
}

async function chat(client) {
  const completion = await client.chat.completions.create({
    model: LLAMA, messages: CAPITAL, temperature: 0, max_tokens: 48, seed: 7,
  });
  assert.equal(completion.object, "chat.completion");
  assert.match(completion.id, /^chatcmpl-/);
  assert.equal(completion.model, LLAMA);
  assert.equal(typeof completion.created, "number");
  const [choice] = completion.choices;
  assert.equal(choice.index, 0);
  assert.equal(choice.message.role, "assistant");
  assert.ok(["stop", "length"].includes(choice.finish_reason));
  assert.ok(choice.message.content.includes("Paris"), `answer was ${JSON.stringify(choice.message.content)}`);
  const { usage } = completion;
  assert.equal(usage.total_tokens, usage.prompt_tokens + usage.completion_tokens);
  assert.ok(usage.prompt_tokens > 10 && usage.completion_tokens > 0);
  return { text: choice.message.content, usage };
}

async function chatStream(client, expected) {
  const stream = await client.chat.completions.create({
    model: LLAMA, messages: CAPITAL, temperature: 0, max_tokens: 48, seed: 7,
    stream: true, stream_options: { include_usage: true },
  });
  let text = "";
  let usage = null;
  const roles = [];
  const finishReasons = [];
  for await (const chunk of stream) {
    assert.equal(chunk.object, "chat.completion.chunk");
    if (chunk.usage) {
      assert.deepEqual(chunk.choices, []);
      usage = chunk.usage;
      continue;
    }
    const [choice] = chunk.choices;
    if (choice.delta.role) roles.push(choice.delta.role);
    text += choice.delta.content ?? "";
    if (choice.finish_reason) finishReasons.push(choice.finish_reason);
  }
  assert.deepEqual(roles, ["assistant"]);
  assert.equal(text, expected.text, "streamed text equals the non-streamed text");
  assert.equal(finishReasons.length, 1);
  assert.equal(usage.completion_tokens, expected.usage.completion_tokens);
}

async function completions(client) {
  const prompt = "The capital of France is the city of";
  const completion = await client.completions.create({ model: LLAMA, prompt, temperature: 0, max_tokens: 6 });
  assert.equal(completion.object, "text_completion");
  const { text } = completion.choices[0];
  assert.ok(text.includes("Paris"), `continuation was ${JSON.stringify(text)}`);
  let streamed = "";
  const stream = await client.completions.create({ model: LLAMA, prompt, temperature: 0, max_tokens: 6, stream: true });
  for await (const chunk of stream) streamed += chunk.choices[0]?.text ?? "";
  assert.equal(streamed, text);
}

async function responses(client) {
  const request = {
    model: GPT_OSS, instructions: CAPITAL[0].content, input: CAPITAL[1].content,
    temperature: 0, max_output_tokens: 48,
  };
  const response = await client.responses.create(request);
  assert.equal(response.object, "response");
  assert.match(response.id, /^resp_/);
  assert.equal(response.model, GPT_OSS);
  assert.ok(["completed", "incomplete"].includes(response.status));
  assert.equal(response.output[0].type, "message");
  assert.equal(response.output[0].content[0].type, "output_text");
  assert.ok(response.output_text.includes("Paris"), `answer was ${JSON.stringify(response.output_text)}`);
  const { usage } = response;
  assert.equal(usage.total_tokens, usage.input_tokens + usage.output_tokens);
  // The SDK's streaming helper rebuilds the response from the typed events.
  const stream = client.responses.stream(request);
  let deltas = "";
  for await (const event of stream) {
    if (event.type === "response.output_text.delta") deltas += event.delta;
  }
  const final = await stream.finalResponse();
  assert.equal(deltas, response.output_text, "streamed text equals the non-streamed text");
  assert.equal(final.output_text, response.output_text);
  assert.equal(final.usage.output_tokens, usage.output_tokens);
  await expectError(OpenAI.BadRequestError, 400,
    () => client.responses.create({ model: LLAMA, input: "Hi" }), ["Responses API"]);
  await expectError(OpenAI.BadRequestError, 400,
    () => client.responses.create({ model: GPT_OSS, input: "Hi", previous_response_id: "resp_1" }),
    ["previous_response_id"]);
}

async function embeddings(client) {
  const input = ["hello world", "The stock market fell today."];
  // The SDK asks for base64 by default and decodes it itself.
  const fromBase64 = await client.embeddings.create({ model: BGE, input });
  const floats = await client.embeddings.create({ model: BGE, input, encoding_format: "float" });
  assert.equal(fromBase64.object, "list");
  assert.equal(fromBase64.model, BGE);
  assert.deepEqual(fromBase64.data.map((d) => d.index), [0, 1]);
  for (let i = 0; i < 2; i++) {
    assert.equal(fromBase64.data[i].embedding.length, 384);
    assert.ok(maxDifference(fromBase64.data[i].embedding, floats.data[i].embedding) < 1e-6);
  }
  assert.equal(fromBase64.usage.prompt_tokens, floats.usage.prompt_tokens);
  assert.equal(fromBase64.usage.total_tokens, fromBase64.usage.prompt_tokens);
  const raw = await client.embeddings.create({ model: BGE, input: "hello world", encoding_format: "base64" });
  const bytes = Buffer.from(raw.data[0].embedding, "base64");
  const decoded = Array.from({ length: 384 }, (_, i) => bytes.readFloatLE(i * 4));
  assert.ok(maxDifference(decoded, floats.data[0].embedding) < 1e-6);
  // Token ids (bert-base-uncased: hello 7592, world 2088) embed like the text.
  const ids = await client.embeddings.create({ model: BGE, input: [7592, 2088], encoding_format: "float" });
  assert.ok(maxDifference(ids.data[0].embedding, floats.data[0].embedding) < 1e-5);
}

async function models(client) {
  const listed = [];
  for await (const model of client.models.list()) listed.push(model.id);
  for (const expected of ["smollm2-135m-instruct", "all-minilm-l6-v2", LLAMA, BGE]) {
    assert.ok(listed.includes(expected), `${expected} not listed`);
  }
  assert.equal((await client.models.retrieve(LLAMA)).id, LLAMA);
}

async function expectError(ErrorClass, status, call, words) {
  try {
    await call();
  } catch (error) {
    assert.ok(error instanceof ErrorClass, `expected ${ErrorClass.name}, got ${error}`);
    assert.ok(error instanceof OpenAI.APIError);
    assert.equal(error.status, status);
    for (const word of words) assert.ok(error.message.includes(word), `${error.message} lacks ${word}`);
    return;
  }
  assert.fail(`expected ${ErrorClass.name}`);
}

async function errors(client) {
  await expectError(OpenAI.NotFoundError, 404,
    () => client.chat.completions.create({ model: "gpt-4o", messages: CAPITAL }), ["gpt-4o"]);
  await expectError(OpenAI.BadRequestError, 400,
    () => client.chat.completions.create({ model: LLAMA, messages: [] }), ["messages"]);
  await expectError(OpenAI.BadRequestError, 400,
    () => client.chat.completions.create({ model: LLAMA, messages: "Hi" }), ["messages"]);
  await expectError(OpenAI.BadRequestError, 400,
    () => client.chat.completions.create({ model: LLAMA, messages: CAPITAL, temperature: "hot" }), ["temperature"]);
  await expectError(OpenAI.BadRequestError, 400,
    () => client.chat.completions.create({ model: LLAMA, messages: CAPITAL, max_tokens: -1 }), ["max_tokens"]);
  await expectError(OpenAI.BadRequestError, 400,
    () => client.chat.completions.create({ model: LLAMA, messages: CAPITAL, tools: [{ type: "function", function: { name: "f" } }] }),
    ["tools", "function calling"]);
  await expectError(OpenAI.BadRequestError, 400,
    () => client.embeddings.create({ model: BGE, input: "hi", dimensions: 256 }), ["dimensions"]);
}

const { VERSION } = await import("openai/version");
console.log(`openai ${VERSION}`);
for (const baseURL of bases) {
  const client = new OpenAI({ baseURL, apiKey: "sk-kiln-test", maxRetries: 0, timeout: 120_000 });
  const answer = await chat(client);
  await chatStream(client, answer);
  await completions(client);
  await responses(client);
  await embeddings(client);
  await models(client);
  await errors(client);
  console.log(`ok: ${baseURL}`);
}
