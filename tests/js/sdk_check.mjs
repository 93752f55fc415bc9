// The official OpenAI JavaScript SDK against a running node; prints one JSON object.
// Env: BASE_URL (the node's /v1), KEY (a funded key or token), XCASHU (a token to pay one
// stream per request). Run by tests/e2e/test_js_sdk.py, which checks the figures.
import OpenAI from "openai";

const base = process.env.BASE_URL;
const client = new OpenAI({ baseURL: base, apiKey: process.env.KEY, maxRetries: 0 });
const out = {};

const chat = await client.chat.completions.create({
  model: "test-model",
  messages: [{ role: "user", content: "hi there" }],
  max_tokens: 10,
});
out.chat = { text: chat.choices[0].message.content, usage: chat.usage };

const chatStream = client.chat.completions.stream({
  model: "test-model",
  messages: [{ role: "user", content: "one two" }],
  max_tokens: 10,
});
const finalChat = await chatStream.finalChatCompletion();
out.chat_stream_helper = { text: finalChat.choices[0].message.content, usage: finalChat.usage };

const responseStream = client.responses.stream({
  model: "test-model",
  input: "cyan magenta",
  max_output_tokens: 10,
});
const finalResponse = await responseStream.finalResponse();
out.responses_stream_helper = { text: finalResponse.output_text, usage: finalResponse.usage };

const payPerRequest = new OpenAI({
  baseURL: base,
  apiKey: "unused",
  maxRetries: 0,
  defaultHeaders: { "X-Cashu": process.env.XCASHU },
});
const events = [];
const stream = await payPerRequest.responses.create({
  model: "test-model",
  input: "red green blue",
  stream: true,
});
for await (const event of stream) events.push(event);
const last = events[events.length - 1];
out.responses_stream = {
  types: events.map((e) => e.type ?? null),
  last_usage: last.usage,
  change: last.cashu_change ?? null,
};

try {
  await new OpenAI({ baseURL: base, apiKey: "sk-" + "0".repeat(64), maxRetries: 0 }).chat.completions.create({
    model: "test-model",
    messages: [{ role: "user", content: "hi" }],
  });
  out.bad_key = null;
} catch (error) {
  out.bad_key = { status: error.status, code: error.code, type: error.type, kind: error.constructor.name };
}

console.log(JSON.stringify(out));
