"""`xmodal serve`: load collections and models once, then run uvicorn until Ctrl-C."""

from __future__ import annotations

import contextlib
from pathlib import Path

import uvicorn

from xmodal.serve.app import create_app
from xmodal.serve.collections import Encoders, load_collections


class _Server(uvicorn.Server):
    """Says where it listens once the socket is bound (port 0 picks a free one)."""

    async def startup(self, sockets=None) -> None:
        await super().startup(sockets)
        if self.started:
            host, port = self.servers[0].sockets[0].getsockname()[:2]
            shown = f"[{host}]" if ":" in host else host
            print(f"xmodal serve: ready at http://{shown}:{port}/", flush=True)


def serve(
    paths: list[str | Path],
    host: str = "127.0.0.1",
    port: int = 8000,
    aligner: str | None = None,
    allow_origins: list[str] | None = None,
    device: str | None = None,
    threads: int = 1,
) -> None:
    """Serve run folders and indexes at http://HOST:PORT/ (API at /api, docs at /docs).

    `threads`: compute threads of the encoders and the search (torch, BLAS, OpenMP). One
    batch of queries runs at a time; with 1 the other cores stay free for the event loop,
    uploads and thumbnails, and a loaded machine's cores are not oversubscribed (spinning
    thread pools made single queries over 20x slower on a busy 2-core machine). Raise it on a
    dedicated many-core machine.
    """
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(threads)
    threadpool_limits(threads)
    collections = load_collections(paths, aligner)
    for c in collections.values():
        d = c.describe()
        print(
            f"{d['name']}: {d['images']} images, {d['captions']} captions, "
            f"{d['aligner']} [{d['metric']}], {d['image_encoder']} + {d['text_encoder']} "
            f"({c.source})",
            flush=True,
        )
    encoders = Encoders(device)
    encoders.load(collections)
    app = create_app(collections, encoders, allow_origins)
    config = uvicorn.Config(app, host=host, port=port, timeout_graceful_shutdown=5)
    # uvicorn shuts down gracefully on Ctrl-C, then raises it again: the stop was asked for
    with contextlib.suppress(KeyboardInterrupt):
        _Server(config).run()
