"""A deployed student (`distilled/NAME`, gateway `local` provider) through the official openai and
anthropic SDKs: chat completions, responses and messages, plain and streamed, by its own name and
through an alias it was put first on; usage carries the student's token counts. Phase "gone" checks
that an undeployed student is a 404 in both SDKs' shapes."""
import anthropic
import openai
from anthropic import Anthropic
from openai import OpenAI

from e2e import check, config, eq, raises, step

cfg = config()
oa = OpenAI(base_url=f"http://{cfg['addr']}/v1", api_key=cfg["key"], max_retries=0, timeout=30)
an = Anthropic(base_url=f"http://{cfg['addr']}", api_key=cfg["key"], max_retries=0, timeout=30)
model, alias = cfg["model"], cfg["alias"]
# Each case: the mail, the label the student gives it, and the student's token counts.
cases = cfg["cases"]

if cfg["phase"] == "gone":

    @step("openai: an undeployed student is a 404")
    def _():
        e = raises(openai.NotFoundError, lambda: oa.chat.completions.create(
            model=model, messages=[{"role": "user", "content": "hello"}]), "chat.completions.create")
        check(model in str(e), "the error names the model", str(e))

    @step("anthropic: an undeployed student is a 404")
    def _():
        raises(anthropic.NotFoundError, lambda: an.messages.create(
            model=model, max_tokens=10, messages=[{"role": "user", "content": "hello"}]), "messages.create")

    @step("models.list no longer lists it")
    def _():
        check(model not in [m.id for m in oa.models.list()], f"{model} is not listed")

    print("students client: all checks passed", flush=True)
    raise SystemExit(0)


@step("models.list lists the student")
def _():
    ids = [m.id for m in oa.models.list()]
    check(model in ids, f"{model} is listed", ids)


@step("chat.completions.create answers with the student's label and its token counts")
def _():
    for c in cases:
        r = oa.chat.completions.create(model=model, messages=[
            {"role": "system", "content": "Answer spam or ham."},
            {"role": "user", "content": c["text"]},
        ])
        eq(r.choices[0].message.content, c["label"], "answer")
        eq(r.model, model, "model")
        eq(r.usage.prompt_tokens, c["input_tokens"], "usage.prompt_tokens")
        eq(r.usage.completion_tokens, c["output_tokens"], "usage.completion_tokens")


@step("chat.completions.create(stream=True, include_usage)")
def _():
    c = cases[0]
    stream = oa.chat.completions.create(model=model, messages=[{"role": "user", "content": c["text"]}],
                                        stream=True, stream_options={"include_usage": True})
    text, usage = "", None
    for chunk in stream:
        usage = chunk.usage or usage
        text += "".join(ch.delta.content or "" for ch in chunk.choices)
    eq(text, c["label"], "streamed answer")
    check(usage is not None, "a usage chunk")
    eq((usage.prompt_tokens, usage.completion_tokens), (c["input_tokens"], c["output_tokens"]), "streamed usage")


@step("responses.create")
def _():
    c = cases[1]
    r = oa.responses.create(model=model, input=c["text"])
    eq(r.output_text, c["label"], "output_text")
    eq((r.usage.input_tokens, r.usage.output_tokens), (c["input_tokens"], c["output_tokens"]), "usage")


@step("the alias the student was put first on is served by the student")
def _():
    c = cases[0]
    r = oa.chat.completions.create(model=alias, messages=[{"role": "user", "content": c["text"]}])
    eq(r.choices[0].message.content, c["label"], "answer through the alias")
    eq(r.model, model, "served by the student")


@step("anthropic messages.create")
def _():
    for c in cases:
        r = an.messages.create(model=model, max_tokens=16, messages=[{"role": "user", "content": c["text"]}])
        eq(r.content[0].text, c["label"], "answer")
        eq(r.stop_reason, "end_turn", "stop_reason")
        eq((r.usage.input_tokens, r.usage.output_tokens), (c["input_tokens"], c["output_tokens"]), "usage")


@step("anthropic messages.stream")
def _():
    c = cases[-1]
    with an.messages.stream(model=model, max_tokens=16, messages=[{"role": "user", "content": c["text"]}]) as s:
        text = "".join(s.text_stream)
        final = s.get_final_message()
    eq(text, c["label"], "streamed answer")
    eq(final.usage.output_tokens, c["output_tokens"], "streamed usage.output_tokens")


@step("a request with no user text is refused with a 400 that says why")
def _():
    e = raises(openai.BadRequestError, lambda: oa.chat.completions.create(
        model=model, messages=[{"role": "assistant", "content": "hi"}]), "assistant-only conversation")
    check("user message" in str(e), "the error says a user message is needed", str(e))


print("students client: all checks passed", flush=True)
