"""A tiny, deterministic text model behind HTTP: what a Gridwork service serves in the
examples and tests (no weights are downloaded). A character bigram model is built from the
corpus among the inputs (or this file); each next character is drawn from the model with a
seed made of the prompt and the position, so every member answers a prompt with the same
bytes and different prompts get different text.

    POST /v1/completions  {"prompt": "...", "max_tokens": 64}
    -> {"completion": "...", "model": "bigram-<hash of the corpus>"}

    POST /v1/completions  {"prompt": "...", "max_tokens": 64, "stream": true, "token_ms": 20}
    -> text/event-stream, a token at a time as it is made (every token_ms, at most 1000):
       data: {"text": "<token>"}   ...   data: [DONE]

    POST /v1/chat/completions  OpenAI's chat completions (the messages' contents are the
    prompt), whole or streamed ("stream": true: chat.completion.chunk events, then
    data: [DONE]), so OpenAI's own clients work against it. Every field a member's answer
    carries is made from the request alone ("created" is 0, the id a hash of the request): the
    council's answers agree byte for byte.

    POST /v1/embeddings  OpenAI's embeddings: {"input": "..." or ["...", ...], "dimensions": 8}
    -> {"object": "list", "data": [{"object": "embedding", "index": 0, "embedding": [...]}], ...}
       Each vector is made from its input alone, of unit length. With --jitter X (or
       $GRIDWORK_JITTER) every number is off by a random relative X at most, drawn anew for
       each answer, as a GPU's sums in another order are: members' answers then differ in
       their last digits, and a service of this model compares them within a tolerance.

On a worker it answers on the UNIX socket $GRIDWORK_SOCKET (a task has no network); run by
hand, on 127.0.0.1:8080 (or $GRIDWORK_PORT).
"""
import hashlib
import json
import math
import os
import random
import socketserver
import sys
import time
from http.server import BaseHTTPRequestHandler, HTTPServer

inputs = os.environ.get("GRIDWORK_INPUTS", os.path.dirname(os.path.abspath(__file__)))
corpus_path = os.path.join(inputs, "corpus.txt")
if not os.path.exists(corpus_path):
    corpus_path = os.path.abspath(__file__)
with open(corpus_path, encoding="utf-8") as f:
    corpus = f.read()

# Counts of each next character after each character, in a fixed order.
following = {}
for a, b in zip(corpus, corpus[1:]):
    following.setdefault(a, {}).setdefault(b, 0)
    following[a][b] += 1
table = {a: sorted(nexts.items()) for a, nexts in following.items()}
model = "bigram-" + hashlib.blake2b(corpus.encode(), digest_size=8).hexdigest()

jitter = float(os.environ.get("GRIDWORK_JITTER", "0"))
if "--jitter" in sys.argv[1:-1]:
    jitter = float(sys.argv[sys.argv.index("--jitter") + 1])
noise = random.Random()  # seeded from the system: each answer's own


def embed(text, dimensions):
    values = []
    for i in range(dimensions):
        seed = hashlib.blake2b(f"{model}\0{text}\0{i}".encode(), digest_size=8).digest()
        values.append(int.from_bytes(seed, "little") / 2**63 - 1.0)
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return [v / norm * (1.0 + jitter * noise.uniform(-1.0, 1.0)) for v in values]


def complete(prompt, max_tokens):
    out = []
    last = prompt[-1:] or " "
    for i in range(max(0, min(max_tokens, 4096))):
        nexts = table.get(last) or table[" "]
        total = sum(n for _, n in nexts)
        seed = hashlib.blake2b(f"{prompt}\0{i}".encode(), digest_size=8).digest()
        ticket = int.from_bytes(seed, "little") % total
        for char, n in nexts:
            if ticket < n:
                last = char
                break
            ticket -= n
        out.append(last)
    return "".join(out)


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        if self.path == "/v1/chat/completions":
            self.chat()
            return
        if self.path == "/v1/embeddings":
            self.embeddings()
            return
        if self.path != "/v1/completions":
            self.send_error(404, "POST /v1/completions, /v1/chat/completions or /v1/embeddings")
            return
        length = int(self.headers.get("Content-Length") or 0)
        try:
            body = json.loads(self.rfile.read(length) or b"{}")
            prompt = str(body.get("prompt", ""))
            max_tokens = int(body.get("max_tokens", 64))
            stream = bool(body.get("stream", False))
            token_ms = max(0, min(int(body.get("token_ms", 0)), 1000))
        except (ValueError, TypeError, AttributeError) as e:
            self.send_error(400, f"bad request: {e}")
            return
        if stream:
            # Server-sent events, no length stated: the body ends as the connection does.
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-cache")
            self.end_headers()
            for token in complete(prompt, max_tokens):
                if token_ms:
                    time.sleep(token_ms / 1000)
                self.wfile.write(b"data: " + json.dumps({"text": token}).encode() + b"\n\n")
                self.wfile.flush()
            self.wfile.write(b"data: [DONE]\n\n")
            self.wfile.flush()
            self.close_connection = True
            return
        answer = json.dumps({"completion": complete(prompt, max_tokens), "model": model}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def chat(self):
        length = int(self.headers.get("Content-Length") or 0)
        try:
            body = json.loads(self.rfile.read(length) or b"{}")
            messages = body.get("messages") or []
            prompt = "\n".join(str(m.get("content", "")) for m in messages)
            max_tokens = int(body.get("max_tokens") or body.get("max_completion_tokens") or 64)
            stream = bool(body.get("stream", False))
            token_ms = max(0, min(int(body.get("token_ms", 0)), 1000))
        except (ValueError, TypeError, AttributeError) as e:
            self.send_error(400, f"bad request: {e}")
            return
        ident = "chatcmpl-" + hashlib.blake2b(
            json.dumps(body, sort_keys=True).encode(), digest_size=12
        ).hexdigest()
        text = complete(prompt, max_tokens)

        def chunk(delta, finish):
            return {
                "id": ident,
                "object": "chat.completion.chunk",
                "created": 0,
                "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }

        if stream:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-cache")
            self.end_headers()
            events = [chunk({"role": "assistant", "content": ""}, None)]
            events += [chunk({"content": token}, None) for token in text]
            events.append(chunk({}, "length"))
            for i, event in enumerate(events):
                if token_ms and 0 < i < len(events) - 1:
                    time.sleep(token_ms / 1000)
                self.wfile.write(b"data: " + json.dumps(event).encode() + b"\n\n")
                self.wfile.flush()
            self.wfile.write(b"data: [DONE]\n\n")
            self.wfile.flush()
            self.close_connection = True
            return
        answer = json.dumps(
            {
                "id": ident,
                "object": "chat.completion",
                "created": 0,
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": text},
                        "finish_reason": "length",
                    }
                ],
                "usage": {
                    "prompt_tokens": len(prompt),
                    "completion_tokens": len(text),
                    "total_tokens": len(prompt) + len(text),
                },
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def embeddings(self):
        length = int(self.headers.get("Content-Length") or 0)
        try:
            body = json.loads(self.rfile.read(length) or b"{}")
            inputs = body.get("input", "")
            inputs = [inputs] if isinstance(inputs, str) else [str(t) for t in inputs]
            dimensions = max(1, min(int(body.get("dimensions") or 8), 1024))
        except (ValueError, TypeError, AttributeError) as e:
            self.send_error(400, f"bad request: {e}")
            return
        tokens = sum(len(t) for t in inputs)
        answer = json.dumps(
            {
                "object": "list",
                "data": [
                    {"object": "embedding", "index": i, "embedding": embed(t, dimensions)}
                    for i, t in enumerate(inputs[:256])
                ],
                "model": model,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def address_string(self):
        return "gateway"

    def log_message(self, fmt, *args):
        sys.stderr.write(fmt % args + "\n")


class UnixHTTPServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


if __name__ == "__main__":
    socket_path = os.environ.get("GRIDWORK_SOCKET")
    if socket_path:
        UnixHTTPServer(socket_path, Handler).serve_forever()
    else:
        port = int(os.environ.get("GRIDWORK_PORT", "8080"))
        HTTPServer(("127.0.0.1", port), Handler).serve_forever()
