"""Asks a Gridwork service for a chat completion with OpenAI's own client (PyPI `openai`):
once whole, then streamed, printing each token as it comes. The service's gateway is the
client's base URL and the key `gridwork service key new` made is its API key:

    python3 examples/service/chat.py http://GATEWAY/s/<SERVICE>/v1 gw_... "a prompt"

The example model answers a prompt the same way every time, so the two answers must be the
same text: the script exits non-zero when they are not.
"""
import sys

from openai import OpenAI

if len(sys.argv) < 3:
    sys.exit(__doc__)
base_url, api_key = sys.argv[1], sys.argv[2]
prompt = sys.argv[3] if len(sys.argv) > 3 else "Tell the council a story"
client = OpenAI(base_url=base_url, api_key=api_key, max_retries=0, timeout=120)
messages = [{"role": "user", "content": prompt}]

whole = client.chat.completions.create(model="bigram", messages=messages, max_tokens=32)
text = whole.choices[0].message.content
print(f"whole:    {text!r}")

print("streamed: ", end="", flush=True)
tokens = []
for chunk in client.chat.completions.create(
    model="bigram", messages=messages, max_tokens=32, stream=True
):
    if chunk.choices and chunk.choices[0].delta.content:
        tokens.append(chunk.choices[0].delta.content)
        print(chunk.choices[0].delta.content, end="", flush=True)
print()
streamed = "".join(tokens)
print(f"tokens:   {len(tokens)}")
if streamed != text:
    sys.exit(f"the streamed answer {streamed!r} is not the whole one {text!r}")
