"""One load-generating client: posts one request body again and again over a kept-alive connection.

    python bench/client.py URL BODY_FILE START_AT SECONDS [HEADERS_FILE [STATUS]]

Waits until `START_AT` (a `time.time()` value; one warm-up request before it), then posts the body as soon as each
answer has arrived, sending no new request after `START_AT + SECONDS`. Every answer must have `STATUS` (200; a
hostile client's bodies expect their 400) or the client exits with the answer. Prints one JSON object: the latency
of every request and when the last answer arrived. Run as its own process, one per client (`harness.load`), and
written on `http.client` with the request bytes built once, so that the clients neither share a GIL nor spend more
time per request than the server they measure. The headers (with the API key) come in a file, never on the command
line, where any user of the machine could read them.
"""

from __future__ import annotations

import http.client
import json
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit


def post_forever(
    url: str, body: bytes, headers: dict[str, str], start_at: float, seconds: float, status: int = 200
) -> dict:
    target = urlsplit(url)
    connection = http.client.HTTPConnection(target.netloc, timeout=120)  # sets TCP_NODELAY
    headers = headers | {"Content-Type": "application/json", "Content-Length": str(len(body))}

    def post() -> None:
        connection.request("POST", target.path, body, headers)
        answer = connection.getresponse()
        data = answer.read()
        if answer.status != status:
            raise SystemExit(f"{url} answered {answer.status}: {data[:300]!r}")

    post()  # warm-up: the connection is open before the clock starts
    time.sleep(max(0.0, start_at - time.time()))
    latencies: list[float] = []
    stop_at = start_at + seconds
    while time.time() < stop_at:
        started = time.perf_counter()
        post()
        latencies.append(time.perf_counter() - started)
    return {"latencies": latencies, "finished_at": time.time()}


def main() -> None:
    url, body_file, start_at, seconds = sys.argv[1:5]
    headers = json.loads(Path(sys.argv[5]).read_text()) if len(sys.argv) > 5 else {}
    status = int(sys.argv[6]) if len(sys.argv) > 6 else 200
    result = post_forever(url, Path(body_file).read_bytes(), headers, float(start_at), float(seconds), status)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
