"""llama.cpp's OpenAI-compatible HTTP server (the one inside the ``xllamacpp`` wheel) as a process for the tests.

    python tests/llama_http_server.py --model M.gguf --port 0 [--parallel 2] [--n-ctx 2048] [--alias smollm2]

Prints ``READY http://127.0.0.1:PORT`` once the model is loaded, then serves until SIGTERM/SIGINT or until its
standard input closes (so a test run that dies does not leave it behind).
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--parallel", type=int, default=2)
    ap.add_argument("--n-ctx", type=int, default=2048, help="tokens per slot")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--alias", default="smollm2")
    args = ap.parse_args()

    import xllamacpp

    params = xllamacpp.CommonParams()
    params.model.path = args.model
    params.model_alias = {args.alias}
    params.hostnames = ["127.0.0.1"]
    params.port = args.port
    params.n_parallel = args.parallel
    params.n_ctx = args.n_ctx * args.parallel
    params.cpuparams.n_threads = args.threads
    params.cpuparams_batch.n_threads = args.threads
    params.verbosity = 0
    server = xllamacpp.Server(params)  # loads the model and starts listening

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
    print(f"READY {server.listening_address}", flush=True)
    stop.wait()
    del server


if __name__ == "__main__":
    main()
