"""The official anthropic SDK against the gateway's Messages API, answered by OpenAI-shaped targets
(provider `oa`) so that every call crosses protocols: plain and streamed messages through failover,
a tool use round trip (plain and streamed), count_tokens and the authentication error."""
import anthropic
from anthropic import Anthropic

from e2e import check, config, eq, raises, step

cfg = config()
base_url = f"http://{cfg['addr']}"
client = Anthropic(base_url=base_url, api_key=cfg["key"], max_retries=0, timeout=30)
alias, served, expected, prompt = cfg["alias"], cfg["served"], cfg["expected"], cfg["prompt"]
words = len(expected.split())
messages = [{"role": "user", "content": prompt}]


@step("messages.create through failover, served by an OpenAI-shaped target")
def _():
    m = client.messages.create(model=alias, max_tokens=256, messages=messages)
    eq(m.type, "message", "type")
    eq(m.role, "assistant", "role")
    eq([b.type for b in m.content], ["text"], "content block types")
    eq(m.content[0].text, expected, "answer text")
    eq(m.model, served, "model (the one that served)")
    eq(m.stop_reason, "end_turn", "stop_reason")
    check(m.usage.input_tokens > 0, "usage.input_tokens > 0", m.usage)
    eq(m.usage.output_tokens, words, "usage.output_tokens")


@step("messages.stream through failover")
def _():
    with client.messages.stream(model=alias, max_tokens=256, messages=messages) as s:
        deltas = list(s.text_stream)
        text = s.get_final_text()
        final = s.get_final_message()
    eq("".join(deltas), expected, "text_stream")
    eq(text, expected, "get_final_text()")
    eq(final.model, served, "final message model")
    eq(final.stop_reason, "end_turn", "final stop_reason")
    check(final.usage.input_tokens > 0, "final usage.input_tokens > 0", final.usage)
    eq(final.usage.output_tokens, words, "final usage.output_tokens")


tools = [
    {
        "name": "lookup",
        "description": "Looks something up.",
        "input_schema": {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]},
    }
]
question = "What is the weather in Paris?"


def only_tool_use(m):
    eq(m.stop_reason, "tool_use", "stop_reason")
    uses = [b for b in m.content if b.type == "tool_use"]
    eq(len(uses), 1, "tool_use blocks")
    use = uses[0]
    eq(use.name, "lookup", "tool name")
    check(isinstance(use.input, dict), "tool input is a dict", use.input)
    eq(use.input, {"query": question}, "tool input")
    check(use.id, "a tool_use id", use)
    return use


@step("tool use round trip")
def _():
    history = [{"role": "user", "content": question}]
    use = only_tool_use(client.messages.create(model=cfg["tools"], max_tokens=256, messages=history, tools=tools))
    history.append({"role": "assistant", "content": [{"type": "tool_use", "id": use.id, "name": use.name, "input": use.input}]})
    history.append({"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "sunny, 21 C"}]})
    m = client.messages.create(model=cfg["tools"], max_tokens=256, messages=history, tools=tools)
    eq([b.type for b in m.content], ["text"], "content after the tool result")
    eq(m.content[0].text, "tool said: sunny, 21 C", "answer after the tool result")
    eq(m.stop_reason, "end_turn", "stop_reason after the tool result")


@step("tool use, streamed")
def _():
    history = [{"role": "user", "content": question}]
    with client.messages.stream(model=cfg["tools"], max_tokens=256, messages=history, tools=tools) as s:
        final = s.get_final_message()
    only_tool_use(final)


@step("messages.count_tokens")
def _():
    r = client.messages.count_tokens(model=alias, messages=messages)
    check(isinstance(r.input_tokens, int) and r.input_tokens > 0, "input_tokens > 0", r)


@step("a bad key raises AuthenticationError")
def _():
    bad = Anthropic(base_url=base_url, api_key="sk-not-a-key", max_retries=0)
    e = raises(
        anthropic.AuthenticationError,
        lambda: bad.messages.create(model=alias, max_tokens=16, messages=messages),
        "bad key",
    )
    eq(e.status_code, 401, "status")
    check("API key" in str(e), "the message is about the API key", str(e))


@step("an unknown model raises NotFoundError")
def _():
    e = raises(
        anthropic.NotFoundError,
        lambda: client.messages.create(model="no-such-model", max_tokens=16, messages=messages),
        "unknown model",
    )
    eq(e.status_code, 404, "status")
    check("no-such-model" in str(e), "the message names the model", str(e))


print("anthropic client: all checks passed")
