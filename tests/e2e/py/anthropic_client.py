"""The official Anthropic Python SDK as a consumer of the gateway (layer-3 tests): the
gateway key is the SDK's api_key (sent as x-api-key), the base URL the gateway's /anthropic.

usage: anthropic_client.py BASE_URL API_KEY SCENARIO PROMPT [HEADER=VALUE ...]
SCENARIO: messages | messages_stream | tool_result. Prints one JSON object: what the SDK saw.
"""

import json
import sys

import anthropic


def main() -> None:
    base_url, api_key, scenario, prompt = sys.argv[1:5]
    headers = dict(h.split("=", 1) for h in sys.argv[5:])
    client = anthropic.Anthropic(base_url=base_url, api_key=api_key, max_retries=0, timeout=20)
    messages = [{"role": "user", "content": prompt}]
    if scenario == "tool_result":
        # An indirect injection: the prompt arrives as a tool's result.
        messages = [
            {"role": "user", "content": "Look up my order."},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "orders", "input": {}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": prompt}]},
        ]
    out = {"ok": True}
    try:
        if scenario in ("messages", "tool_result"):
            r = client.messages.create(
                model="mock-claude", max_tokens=256, messages=messages, extra_headers=headers
            )
            out["content"] = "".join(b.text for b in r.content if b.type == "text")
            out["usage"] = r.usage.model_dump()
            out["stop_reason"] = r.stop_reason
        else:
            parts, stop_reason, usage = [], None, None
            with client.messages.stream(
                model="mock-claude", max_tokens=256, messages=messages, extra_headers=headers
            ) as stream:
                for event in stream:
                    if event.type == "content_block_delta" and event.delta.type == "text_delta":
                        parts.append(event.delta.text)
                final = stream.get_final_message()
                stop_reason = final.stop_reason
                usage = final.usage.model_dump()
                final_text = "".join(b.text for b in final.content if b.type == "text")
            out.update(content="".join(parts), parts=parts, final_text=final_text,
                       stop_reason=stop_reason, usage=usage)
    except anthropic.APIStatusError as e:
        out = {"ok": False, "status": e.status_code, "body": e.response.text}
    except Exception as e:  # noqa: BLE001 - the test asserts on the kind of failure
        out = {"ok": False, "error": type(e).__name__, "message": str(e)}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
