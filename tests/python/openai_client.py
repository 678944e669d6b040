"""The official openai SDK against the gateway: chat completions (plain, streamed, tools), responses
(plain, streamed), model listing and error classes. Every answer comes through an alias whose first
target is down, so failover is exercised on each call."""
import json

import openai
from openai import OpenAI

from e2e import check, config, eq, raises, step

cfg = config()
base_url = f"http://{cfg['addr']}/v1"
client = OpenAI(base_url=base_url, api_key=cfg["key"], max_retries=0, timeout=30)
alias, served, expected, prompt = cfg["alias"], cfg["served"], cfg["expected"], cfg["prompt"]
words = len(expected.split())
messages = [{"role": "user", "content": prompt}]


@step("chat.completions.create through failover")
def _():
    r = client.chat.completions.create(model=alias, messages=messages)
    eq(r.choices[0].message.content, expected, "answer text")
    eq(r.choices[0].finish_reason, "stop", "finish_reason")
    eq(r.model, served, "model (the one that served)")
    check(r.usage is not None and r.usage.prompt_tokens > 0, "usage.prompt_tokens > 0", r.usage)
    eq(r.usage.completion_tokens, words, "usage.completion_tokens")
    eq(r.usage.total_tokens, r.usage.prompt_tokens + r.usage.completion_tokens, "usage.total_tokens")


@step("chat.completions.create(stream=True, include_usage) through failover")
def _():
    stream = client.chat.completions.create(
        model=alias, messages=messages, stream=True, stream_options={"include_usage": True}
    )
    text, finish, usage, models = "", None, None, set()
    for chunk in stream:
        models.add(chunk.model)
        if chunk.usage is not None:
            usage = chunk.usage
        for c in chunk.choices:
            text += c.delta.content or ""
            finish = c.finish_reason or finish
    eq(text, expected, "streamed text")
    eq(finish, "stop", "finish_reason")
    eq(models, {served}, "chunk models")
    check(usage is not None and usage.prompt_tokens > 0, "a usage chunk with prompt_tokens > 0", usage)
    eq(usage.completion_tokens, words, "streamed usage.completion_tokens")


@step("chat.completions.create(stream=True) served by an Anthropic-shaped target")
def _():
    stream = client.chat.completions.create(model=cfg["claude"], messages=messages, stream=True)
    text = "".join(c.delta.content or "" for chunk in stream for c in chunk.choices)
    eq(text, expected, "streamed text from the Anthropic-shaped provider")


@step("responses.create through failover")
def _():
    r = client.responses.create(model=alias, input=prompt)
    eq(r.output_text, expected, "output_text")
    eq(r.status, "completed", "status")
    eq(r.model, served, "model")
    check(r.usage is not None and r.usage.input_tokens > 0, "usage.input_tokens > 0", r.usage)
    eq(r.usage.output_tokens, words, "usage.output_tokens")


@step("responses.create(stream=True) through failover")
def _():
    deltas, done_text, completed, types, seqs = [], None, None, [], []
    for ev in client.responses.create(model=alias, input=prompt, stream=True):
        types.append(ev.type)
        seqs.append(ev.sequence_number)
        if ev.type == "response.output_text.delta":
            deltas.append(ev.delta)
        elif ev.type == "response.output_text.done":
            done_text = ev.text
        elif ev.type == "response.completed":
            completed = ev.response
    eq(seqs, list(range(len(seqs))), "sequence_number counts up from 0")
    eq(done_text, expected, "response.output_text.done text")
    check(types and types[0] == "response.created", "the first event is response.created", types)
    eq(types[-1], "response.completed", "the last event")
    eq("".join(deltas), expected, "concatenated response.output_text.delta")
    eq(completed.status, "completed", "response.completed status")
    eq(completed.output_text, expected, "response.completed output_text")
    check(completed.usage is not None and completed.usage.output_tokens == words, "completed usage", completed.usage)


@step("models.list")
def _():
    ids = {m.id for m in client.models.list()}
    check({alias, served, cfg["tools"], cfg["claude"]} <= ids, "alias and models listed", ids)


tools = [
    {
        "type": "function",
        "function": {
            "name": "lookup",
            "description": "Looks something up.",
            "parameters": {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]},
        },
    }
]
question = "What is the weather in Paris?"


@step("chat tool call round trip")
def _():
    history = [{"role": "user", "content": question}]
    r = client.chat.completions.create(model=cfg["tools"], messages=history, tools=tools)
    msg = r.choices[0].message
    eq(r.choices[0].finish_reason, "tool_calls", "finish_reason")
    check(msg.tool_calls and len(msg.tool_calls) == 1, "one tool call", msg)
    call = msg.tool_calls[0]
    eq(call.function.name, "lookup", "tool name")
    eq(json.loads(call.function.arguments), {"query": question}, "tool arguments")
    check(call.id, "a tool call id", call)
    history.append(
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": call.id, "type": "function", "function": {"name": "lookup", "arguments": call.function.arguments}}
            ],
        }
    )
    history.append({"role": "tool", "tool_call_id": call.id, "content": "sunny, 21 C"})
    r = client.chat.completions.create(model=cfg["tools"], messages=history, tools=tools)
    eq(r.choices[0].message.content, "tool said: sunny, 21 C", "answer after the tool result")
    eq(r.choices[0].finish_reason, "stop", "finish_reason after the tool result")


@step("chat tool call, streamed")
def _():
    stream = client.chat.completions.create(
        model=cfg["tools"], messages=[{"role": "user", "content": question}], tools=tools, stream=True
    )
    calls, finish = {}, None
    for chunk in stream:
        for c in chunk.choices:
            finish = c.finish_reason or finish
            for tc in c.delta.tool_calls or []:
                acc = calls.setdefault(tc.index, {"id": None, "name": "", "arguments": ""})
                acc["id"] = tc.id or acc["id"]
                if tc.function:
                    acc["name"] += tc.function.name or ""
                    acc["arguments"] += tc.function.arguments or ""
    eq(finish, "tool_calls", "finish_reason")
    eq(len(calls), 1, "streamed tool calls")
    (call,) = calls.values()
    eq(call["name"], "lookup", "streamed tool name")
    eq(json.loads(call["arguments"]), {"query": question}, "streamed tool arguments")
    check(call["id"], "a tool call id", call)


@step("a bad key raises AuthenticationError")
def _():
    bad = OpenAI(base_url=base_url, api_key="sk-not-a-key", max_retries=0)
    e = raises(openai.AuthenticationError, lambda: bad.chat.completions.create(model=alias, messages=messages), "bad key")
    eq(e.status_code, 401, "status")
    check("API key" in str(e), "the message is about the API key", str(e))


@step("an unknown model raises NotFoundError")
def _():
    e = raises(
        openai.NotFoundError,
        lambda: client.chat.completions.create(model="no-such-model", messages=messages),
        "unknown model",
    )
    eq(e.status_code, 404, "status")
    eq(e.code, "model_not_found", "error code")
    check("no-such-model" in str(e), "the message names the model", str(e))


print("openai client: all checks passed")
