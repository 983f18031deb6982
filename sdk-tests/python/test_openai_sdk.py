"""Drives Kiln with the official `openai` Python package, unchanged.

Run by crates/kiln/tests/openai_sdk.rs with KILN_BASE_URL (http://127.0.0.1:PORT) and
KILN_ACCOUNT set; exits non-zero with a message on the first failed check.
"""

import base64
import json
import os
import struct
import sys

try:
    import openai
    from openai import OpenAI
except ImportError:
    sys.exit("the openai package is not installed in this Python: run scripts/install-deps")

ROOT = os.environ["KILN_BASE_URL"].rstrip("/")
ACCOUNT = os.environ.get("KILN_ACCOUNT", "local")
LLAMA = "@cf/meta/llama-3.1-8b-instruct"
BGE = "@cf/baai/bge-base-en-v1.5"
GPT_OSS = "@cf/openai/gpt-oss-20b"
CAPITAL = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "What is the capital of France?"},
]

BASES = [f"{ROOT}/v1", f"{ROOT}/client/v4/accounts/{ACCOUNT}/ai/v1"]
# Qwen2.5-Coder-0.5B's chat template has tool calling (Hermes `<tool_call>` syntax).
QWEN = "qwen2.5-coder-0.5b-instruct"
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "description": "The city name"}},
            "required": ["city"],
        },
    },
}


def check(condition, message):
    if not condition:
        raise AssertionError(message)


def chat(client):
    completion = client.chat.completions.create(
        model=LLAMA, messages=CAPITAL, temperature=0, max_tokens=48, seed=7
    )
    check(completion.object == "chat.completion", completion)
    check(completion.id.startswith("chatcmpl-"), completion.id)
    check(completion.model == LLAMA, completion.model)
    check(isinstance(completion.created, int), completion.created)
    choice = completion.choices[0]
    check(choice.index == 0 and choice.message.role == "assistant", choice)
    check(choice.finish_reason in ("stop", "length"), choice.finish_reason)
    check("Paris" in choice.message.content, f"answer was {choice.message.content!r}")
    usage = completion.usage
    check(usage.total_tokens == usage.prompt_tokens + usage.completion_tokens, usage)
    check(usage.prompt_tokens > 10 and usage.completion_tokens > 0, usage)
    return choice.message.content, usage


def chat_stream(client, expected_text, expected_usage):
    stream = client.chat.completions.create(
        model=LLAMA,
        messages=CAPITAL,
        temperature=0,
        max_tokens=48,
        seed=7,
        stream=True,
        stream_options={"include_usage": True},
    )
    pieces, finish_reasons, usage, roles = [], [], None, []
    for chunk in stream:
        check(chunk.object == "chat.completion.chunk", chunk)
        if chunk.usage is not None:
            check(chunk.choices == [], chunk)
            usage = chunk.usage
            continue
        delta = chunk.choices[0].delta
        if delta.role:
            roles.append(delta.role)
        if delta.content:
            pieces.append(delta.content)
        if chunk.choices[0].finish_reason:
            finish_reasons.append(chunk.choices[0].finish_reason)
    check(roles == ["assistant"], roles)
    check("".join(pieces) == expected_text, f"streamed {''.join(pieces)!r} != {expected_text!r}")
    check(len(finish_reasons) == 1, finish_reasons)
    check(usage is not None and usage.completion_tokens == expected_usage.completion_tokens, usage)


def completions(client):
    prompt = "The capital of France is the city of"
    completion = client.completions.create(model=LLAMA, prompt=prompt, temperature=0, max_tokens=6)
    check(completion.object == "text_completion", completion)
    text = completion.choices[0].text
    check("Paris" in text, f"continuation was {text!r}")
    streamed = "".join(
        chunk.choices[0].text
        for chunk in client.completions.create(
            model=LLAMA, prompt=prompt, temperature=0, max_tokens=6, stream=True
        )
        if chunk.choices
    )
    check(streamed == text, f"streamed {streamed!r} != {text!r}")


def embeddings(client):
    texts = ["hello world", "The stock market fell today."]
    # The SDK asks for base64 by default and decodes it itself.
    default = client.embeddings.create(model=BGE, input=texts)
    floats = client.embeddings.create(model=BGE, input=texts, encoding_format="float")
    check(default.object == "list" and default.model == BGE, default)
    check([d.index for d in default.data] == [0, 1], default.data)
    for a, b in zip(default.data, floats.data):
        check(len(a.embedding) == 384 and len(b.embedding) == 384, "384 dimensions")
        check(max(abs(x - y) for x, y in zip(a.embedding, b.embedding)) < 1e-6, "base64 == float")
    check(default.usage.prompt_tokens == floats.usage.prompt_tokens > 0, default.usage)
    check(default.usage.total_tokens == default.usage.prompt_tokens, default.usage)
    # Raw base64 through the SDK: little-endian f32.
    raw = client.embeddings.create(model=BGE, input="hello world", encoding_format="base64")
    encoded = raw.data[0].embedding
    decoded = struct.unpack("<384f", base64.b64decode(encoded))
    check(max(abs(x - y) for x, y in zip(decoded, floats.data[0].embedding)) < 1e-6, "raw base64")
    # Token ids (bert-base-uncased: hello 7592, world 2088) embed like the text.
    ids = client.embeddings.create(model=BGE, input=[[7592, 2088]], encoding_format="float")
    check(
        max(abs(x - y) for x, y in zip(ids.data[0].embedding, floats.data[0].embedding)) < 1e-5,
        "token ids embed like text",
    )


def models(client):
    listed = [m.id for m in client.models.list()]
    for expected in ("smollm2-135m-instruct", "all-minilm-l6-v2", LLAMA, BGE):
        check(expected in listed, f"{expected} not in {listed}")
    check(client.models.retrieve(LLAMA).id == LLAMA, "retrieve")


def errors(client):
    def expect(error_type, status, call, words):
        try:
            call()
        except error_type as error:
            check(error.status_code == status, f"{error_type.__name__}: status {error.status_code}")
            check(isinstance(error, openai.APIError), error)
            check(all(w in error.message for w in words), f"message {error.message!r} lacks {words}")
            return
        raise AssertionError(f"expected {error_type.__name__}")

    expect(
        openai.NotFoundError,
        404,
        lambda: client.chat.completions.create(model="gpt-4o", messages=CAPITAL),
        ["gpt-4o"],
    )
    expect(
        openai.BadRequestError,
        400,
        lambda: client.chat.completions.create(model=LLAMA, messages=[]),
        ["messages"],
    )
    expect(
        openai.BadRequestError,
        400,
        lambda: client.chat.completions.create(model=LLAMA, messages="Hi"),
        ["messages"],
    )
    expect(
        openai.BadRequestError,
        400,
        lambda: client.chat.completions.create(model=LLAMA, messages=CAPITAL, temperature="hot"),
        ["temperature"],
    )
    expect(
        openai.BadRequestError,
        400,
        lambda: client.chat.completions.create(model=LLAMA, messages=CAPITAL, max_tokens=-1),
        ["max_tokens"],
    )
    expect(
        openai.BadRequestError,
        400,
        lambda: client.chat.completions.create(
            model=LLAMA, messages=CAPITAL,
            response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": 5}}},
        ),
        ["response_format", "JSON Schema"],
    )
    expect(
        openai.BadRequestError,
        400,
        lambda: client.embeddings.create(model=BGE, input="hi", dimensions=256),
        ["dimensions"],
    )
    expect(
        openai.BadRequestError,
        400,
        lambda: client.chat.completions.create(model=LLAMA, messages=CAPITAL, tools=[WEATHER_TOOL]),
        ["tools", "function calling"],
    )


def tools(client):
    """The SDK's tool-calling loop: a call, the result fed back, an answer that uses it."""
    messages = [{"role": "user", "content": "What is the weather in Paris?"}]
    completion = client.chat.completions.create(
        model=QWEN, messages=messages, tools=[WEATHER_TOOL], temperature=0
    )
    choice = completion.choices[0]
    check(choice.finish_reason == "tool_calls", choice)
    calls = choice.message.tool_calls
    check(calls and len(calls) == 1, choice.message)
    call = calls[0]
    check(call.type == "function" and call.id.startswith("call_"), call)
    check(call.function.name == "get_weather", call)
    check(json.loads(call.function.arguments) == {"city": "Paris"}, call.function.arguments)

    # Streamed: the call arrives as a tool_calls delta, never as content.
    stream = client.chat.completions.create(
        model=QWEN, messages=messages, tools=[WEATHER_TOOL], temperature=0, stream=True
    )
    streamed_calls, content, finish = [], "", None
    for chunk in stream:
        delta = chunk.choices[0].delta
        content += delta.content or ""
        streamed_calls += delta.tool_calls or []
        finish = chunk.choices[0].finish_reason or finish
    check(finish == "tool_calls" and "<tool_call>" not in content, (finish, content))
    check([c.function.name for c in streamed_calls] == ["get_weather"], streamed_calls)

    messages.append(choice.message.model_dump(exclude_none=True))
    messages.append({
        "role": "tool",
        "tool_call_id": call.id,
        "content": json.dumps({"city": "Paris", "temperature_c": 23, "condition": "sunny"}),
    })
    # tool_choice="none": a 0.5B model offered the tool again would call it again.
    answer = client.chat.completions.create(
        model=QWEN, messages=messages, tools=[WEATHER_TOOL], tool_choice="none",
        temperature=0, max_tokens=80,
    )
    text = answer.choices[0].message.content
    check(answer.choices[0].finish_reason in ("stop", "length"), answer.choices[0])
    check("23" in text or "sunny" in text.lower(), f"the answer ignores the tool result: {text!r}")


def responses(client):
    """The Responses API: plain, streamed through the SDK's helper, and a function call loop."""
    request = dict(
        model=GPT_OSS, instructions=CAPITAL[0]["content"], input=CAPITAL[1]["content"],
        temperature=0, max_output_tokens=48,
    )
    response = client.responses.create(**request)
    check(response.object == "response" and response.id.startswith("resp_"), response)
    check(response.model == GPT_OSS, response.model)
    check(response.output[0].type == "message", response.output)
    check("Paris" in response.output_text, f"answer was {response.output_text!r}")
    usage = response.usage
    check(usage.total_tokens == usage.input_tokens + usage.output_tokens, usage)
    with client.responses.stream(**request) as stream:
        deltas = "".join(e.delta for e in stream if e.type == "response.output_text.delta")
        final = stream.get_final_response()
    check(deltas == response.output_text, (deltas, response.output_text))
    check(final.output_text == response.output_text, final)

    tool = {"type": "function", **WEATHER_TOOL["function"]}
    question = {"role": "user", "content": "What is the weather in Paris?"}
    called = client.responses.create(model=QWEN, input=[question], tools=[tool], temperature=0)
    calls = [item for item in called.output if item.type == "function_call"]
    check(len(calls) == 1 and calls[0].name == "get_weather", called.output)
    check(json.loads(calls[0].arguments) == {"city": "Paris"}, calls[0].arguments)
    result = {"type": "function_call_output", "call_id": calls[0].call_id,
              "output": json.dumps({"temperature_c": 23, "condition": "sunny"})}
    answer = client.responses.create(
        model=QWEN, input=[question, calls[0].model_dump(exclude_none=True), result],
        tools=[tool], tool_choice="none", temperature=0, max_output_tokens=80,
    )
    text = answer.output_text
    check("23" in text or "sunny" in text.lower(), f"the answer ignores the tool result: {text!r}")


def main():
    print(f"openai {openai.__version__}")
    for base in BASES:
        client = OpenAI(base_url=base, api_key="sk-kiln-test", max_retries=0, timeout=120)
        text, usage = chat(client)
        chat_stream(client, text, usage)
        completions(client)
        responses(client)
        embeddings(client)
        models(client)
        errors(client)
        tools(client)
        print(f"ok: {base}")


if __name__ == "__main__":
    try:
        main()
    except Exception as error:  # report the failing check and exit non-zero
        print(f"FAILED: {type(error).__name__}: {error}", file=sys.stderr)
        raise
