"""Request and response bytes shared by unit and end-to-end tests."""

CHAT_BODY = b'{"model":"fast","messages":[{"role":"user","content":"hello"}]}'
STREAM_BODY = b'{"model":"fast","stream":true,"messages":[{"role":"user","content":"hello"}]}'


def post(path: bytes, body: bytes, extra: bytes = b"") -> bytes:
    return (
        b"POST %b HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\nContent-Length: %d\r\n%b\r\n%b"
        % (path, len(body), extra, body)
    )


def get(path: bytes, extra: bytes = b"") -> bytes:
    return b"GET %b HTTP/1.1\r\nHost: gw\r\n%b\r\n" % (path, extra)


CHAT = post(b"/v1/chat/completions", CHAT_BODY)
STREAM = post(b"/v1/chat/completions", STREAM_BODY)
HEALTHZ = get(b"/healthz")

UPSTREAM_JSON = (
    b'{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,'
    b'"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}],'
    b'"usage":{"prompt_tokens":5,"completion_tokens":2,"total_tokens":7}}'
)
UPSTREAM_OK = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%b" % (
    len(UPSTREAM_JSON),
    UPSTREAM_JSON,
)
SSE_EVENTS = [
    b'data: {"choices":[{"index":0,"delta":{"content":"a"}}]}\n\n',
    b'data: {"choices":[{"index":0,"delta":{"content":"b"}}]}\n\n',
    b"data: [DONE]\n\n",
]
UPSTREAM_SSE_HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"


def chunked(data: bytes) -> bytes:
    return b"%x\r\n%b\r\n" % (len(data), data)
