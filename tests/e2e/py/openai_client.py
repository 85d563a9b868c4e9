"""The official OpenAI Python SDK as a consumer of the gateway (layer-3 tests).

usage: openai_client.py BASE_URL API_KEY SCENARIO PROMPT [HEADER=VALUE ...]
SCENARIO: plain | stream | stream_usage. Prints one JSON object: what the SDK saw.
"""

import json
import sys

import openai


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
    messages = [{"role": "user", "content": prompt}]
    out = {"ok": True}
    try:
        if scenario == "plain":
            r = client.chat.completions.create(
                model="mock-gpt", messages=messages, extra_headers=headers
            )
            out["content"] = r.choices[0].message.content
            out["usage"] = r.usage.model_dump() if r.usage else None
            extra = r.model_extra or {}
            out["source"] = extra.get("source")
            out["reason"] = extra.get("reason")
        else:
            kwargs = {}
            if scenario == "stream_usage":
                kwargs["stream_options"] = {"include_usage": True}
            stream = client.chat.completions.create(
                model="mock-gpt",
                messages=messages,
                stream=True,
                extra_headers=headers,
                **kwargs,
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
            out.update(content="".join(parts), parts=parts, usage=usage, chunks=chunks, source=source)
    except openai.APIStatusError as e:
        out = {"ok": False, "status": e.status_code, "body": e.response.text}
    except Exception as e:  # noqa: BLE001 - the test asserts on the kind of failure
        out = {"ok": False, "error": type(e).__name__, "message": str(e)}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
