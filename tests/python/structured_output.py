"""Structured output round trip with the official SDKs (#19): a JSON schema asked for with the
openai SDK (Chat Completions `response_format`, Responses `text.format`) and with the anthropic SDK
(`output_config.format`), each on an OpenAI-shaped and an Anthropic-shaped target, answers JSON that
matches the schema; and Claude Code's mid-conversation system messages pass through the anthropic
SDK with the beta header."""
import json

from anthropic import Anthropic
from openai import OpenAI

from e2e import check, config, eq, step

cfg = config()
oa = OpenAI(base_url=f"http://{cfg['addr']}/v1", api_key=cfg["key"], max_retries=0, timeout=30)
an = Anthropic(base_url=f"http://{cfg['addr']}", api_key=cfg["key"], max_retries=0, timeout=30)
targets = [cfg["served"], cfg["claude"]]
schema = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "temperature": {"type": "number"}, "sunny": {"type": "boolean"}},
    "required": ["city", "temperature", "sunny"],
    "additionalProperties": False,
}
ask = [{"role": "user", "content": "The weather in Paris, as JSON."}]


def matches(text, what):
    try:
        v = json.loads(text)
    except ValueError:
        check(False, f"{what}: the answer is JSON", text)
    check(isinstance(v, dict), f"{what}: a JSON object", v)
    eq(sorted(v), ["city", "sunny", "temperature"], f"{what}: the schema's properties")
    check(isinstance(v["city"], str), f"{what}: city is a string", v)
    check(isinstance(v["temperature"], (int, float)), f"{what}: temperature is a number", v)
    check(isinstance(v["sunny"], bool), f"{what}: sunny is a boolean", v)


for model in targets:

    @step(f"openai chat.completions response_format json_schema on {model}")
    def _():
        r = oa.chat.completions.create(
            model=model,
            messages=ask,
            response_format={"type": "json_schema", "json_schema": {"name": "weather", "schema": schema, "strict": True}},
        )
        matches(r.choices[0].message.content, "chat")

    @step(f"openai responses text.format json_schema on {model}")
    def _():
        r = oa.responses.create(
            model=model,
            input="The weather in Paris, as JSON.",
            text={"format": {"type": "json_schema", "name": "weather", "schema": schema, "strict": True}},
        )
        matches(r.output_text, "responses")

    @step(f"anthropic messages output_config.format on {model}")
    def _():
        r = an.messages.create(
            model=model,
            max_tokens=300,
            messages=ask,
            extra_body={"output_config": {"format": {"type": "json_schema", "schema": schema}}},
        )
        matches(r.content[0].text, "messages")


@step("anthropic messages with a mid-conversation system message (Claude Code's beta)")
def _():
    for model in targets:
        r = an.messages.create(
            model=model,
            max_tokens=100,
            messages=[
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": "hello"},
                {"role": "system", "content": "Answer tersely from now on."},
                {"role": "user", "content": "again"},
            ],
            extra_headers={"anthropic-beta": "mid-conversation-system-2026-04-07"},
        )
        check(len(r.content) > 0 and r.content[-1].type == "text", f"an answer from {model}", r)


print("structured output: all checks passed")
