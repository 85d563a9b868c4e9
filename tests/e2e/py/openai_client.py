"""The official OpenAI Python SDK as a consumer of the gateway (layer-3 tests).

usage: openai_client.py BASE_URL API_KEY SCENARIO PROMPT [HEADER=VALUE ...]
SCENARIO: plain | stream | stream_usage (chat completions), responses | responses_stream,
completions | completions_stream, embeddings, models. Prints one JSON object: what the SDK saw.
"""

import json
import sys

import openai


def chat(client, scenario, prompt, headers):
    messages = [{"role": "user", "content": prompt}]
    if scenario == "plain":
        r = client.chat.completions.create(model="mock-gpt", messages=messages, extra_headers=headers)
        extra = r.model_extra or {}
        return {
            "content": r.choices[0].message.content,
            "usage": r.usage.model_dump() if r.usage else None,
            "source": extra.get("source"),
            "reason": extra.get("reason"),
        }
    kwargs = {}
    if scenario == "stream_usage":
        kwargs["stream_options"] = {"include_usage": True}
    stream = client.chat.completions.create(
        model="mock-gpt", messages=messages, stream=True, extra_headers=headers, **kwargs
    )
    parts, usage, chunks, source = [], None, 0, None
    for chunk in stream:
        chunks += 1
        for c in chunk.choices:
            if c.delta and c.delta.content:
                parts.append(c.delta.content)
        if chunk.usage:
            usage = chunk.usage.model_dump()
        source = (chunk.model_extra or {}).get("source") or source
    return {"content": "".join(parts), "parts": parts, "usage": usage, "chunks": chunks, "source": source}


def responses(client, scenario, prompt, headers):
    if scenario == "responses":
        r = client.responses.create(model="mock-gpt", input=prompt, extra_headers=headers)
        extra = r.model_extra or {}
        return {
            "content": r.output_text,
            "usage": r.usage.model_dump() if r.usage else None,
            "status": r.status,
            "source": extra.get("source"),
        }
    stream = client.responses.create(model="mock-gpt", input=prompt, stream=True, extra_headers=headers)
    parts, final, types, seqs = [], None, [], []
    for event in stream:
        types.append(event.type)
        seqs.append(getattr(event, "sequence_number", None))
        if event.type == "response.output_text.delta":
            parts.append(event.delta)
        elif event.type in ("response.output_text.done",):
            out_done = event.text  # noqa: F841 - the deltas are what is asserted
        elif event.type in ("response.completed", "response.incomplete"):
            final = event.response
    out = {"content": "".join(parts), "parts": parts, "types": types, "sequence": seqs}
    if final is not None:
        out["final_text"] = final.output_text
        out["status"] = final.status
        out["usage"] = final.usage.model_dump() if final.usage else None
    return out


def completions(client, scenario, prompt, headers):
    if scenario == "completions":
        r = client.completions.create(model="mock-gpt", prompt=prompt, extra_headers=headers)
        return {"content": r.choices[0].text, "usage": r.usage.model_dump() if r.usage else None}
    stream = client.completions.create(model="mock-gpt", prompt=prompt, stream=True, extra_headers=headers)
    parts = []
    for chunk in stream:
        for c in chunk.choices:
            if c.text:
                parts.append(c.text)
    return {"content": "".join(parts), "parts": parts}


def main() -> None:
    base_url, api_key, scenario, prompt = sys.argv[1:5]
    headers = dict(h.split("=", 1) for h in sys.argv[5:])
    client = openai.OpenAI(
        base_url=base_url,
        api_key="unused",
        default_headers={"x-api-key": api_key},
        max_retries=0,
        timeout=20,
    )
    out = {"ok": True}
    try:
        if scenario in ("plain", "stream", "stream_usage"):
            out.update(chat(client, scenario, prompt, headers))
        elif scenario.startswith("responses"):
            out.update(responses(client, scenario, prompt, headers))
        elif scenario.startswith("completions"):
            out.update(completions(client, scenario, prompt, headers))
        elif scenario == "embeddings":
            r = client.embeddings.create(model="mock-gpt", input=[prompt], extra_headers=headers)
            out.update(vectors=len(r.data), dims=len(r.data[0].embedding), usage=r.usage.model_dump())
        elif scenario == "models":
            out.update(models=[m.id for m in client.models.list(extra_headers=headers)])
        else:
            raise SystemExit(f"unknown scenario {scenario}")
    except openai.APIStatusError as e:
        out = {"ok": False, "status": e.status_code, "body": e.response.text}
    except Exception as e:  # noqa: BLE001 - the test asserts on the kind of failure
        out = {"ok": False, "error": type(e).__name__, "message": str(e)}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
