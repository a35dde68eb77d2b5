"""The search service: a JSON API and a web page over loaded collections (FastAPI).

Safe to leave running on a shared machine: k is capped, queries and uploads are bounded (size
and pixels, checked before decoding), the server never fetches a URL a client sends, ids are
looked up in a table or, for an embedding folder, checked against its metadata (never joined to
a path), CORS is off unless origins are named, every error is a JSON message, and the page and
API docs load no asset from another site.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, MutableMapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from functools import partial
from importlib import resources
from typing import Annotated, Any, Literal
from urllib.parse import quote

import numpy as np
from fastapi import FastAPI, File, Form, HTTPException, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from xmodal.data.images import ImageError
from xmodal.files import IntegrityError
from xmodal.serve.batching import MicroBatcher
from xmodal.serve.collections import Encoders, ServedCollection, decode_upload
from xmodal.serve.search import Hits, search_batch
from xmodal.serve.search import Query as SearchQuery

MAX_K = 1000
MAX_QUERY_CHARS = 2000
MAX_UPLOAD_BYTES = 10 * 1024 * 1024
MAX_UPLOAD_PIXELS = 64_000_000
#: room for the multipart envelope and the small form fields around an upload
_FORM_OVERHEAD = 64 * 1024

log = logging.getLogger("xmodal.serve")
STATIC = resources.files("xmodal.serve") / "static"
PAGE_CSP = (
    "default-src 'self'; img-src 'self' blob: data:; object-src 'none'; base-uri 'none'; "
    "frame-ancestors 'none'; form-action 'self'"
)


class CollectionInfo(BaseModel):
    name: str
    images: int
    captions: int
    image_encoder: str
    text_encoder: str
    aligner: str
    metric: str
    search: dict[str, str]


class Result(BaseModel):
    id: str
    rank: int
    score: float
    captions: list[str]
    caption: str | None = None
    image_url: str


class SearchResponse(BaseModel):
    collection: str
    target: Literal["image", "text"]
    query: dict[str, str]
    results: list[Result]


class Item(BaseModel):
    id: str
    collection: str
    captions: list[str]
    image_url: str


class Message(BaseModel):
    detail: str


ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": Message} for code in (400, 404, 409, 413, 422)
}


def create_app(
    collections: dict[str, ServedCollection],
    encoders: Encoders,
    allow_origins: list[str] | None = None,
) -> FastAPI:
    """The service over loaded collections (the first one is the default)."""
    if not collections:
        raise ValueError("nothing to serve: give at least one collection")
    models = ThreadPoolExecutor(max_workers=1, thread_name_prefix="encode")
    batchers = {
        name: MicroBatcher(partial(search_batch, c, encoders), models)
        for name, c in collections.items()
    }

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        for b in batchers.values():
            await b.start()
        yield
        for b in batchers.values():
            await b.stop()
        models.shutdown(wait=True, cancel_futures=True)

    app = FastAPI(
        title="xmodal search",
        summary="Cross-modal search over image-caption collections",
        version="1",
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.batchers = batchers
    _errors(app)
    _docs(app)
    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")

    def collection(name: str | None) -> ServedCollection:
        if name is None:
            return next(iter(collections.values()))
        if name not in collections:
            raise HTTPException(404, f"unknown collection {name!r}; have {sorted(collections)}")
        return collections[name]

    def row(c: ServedCollection, item_id: str) -> int:
        """The image row of an id (may read a shard's metadata: call it off the event loop)."""
        found = c.items.row_of(item_id)
        if found is None:
            raise HTTPException(404, f"no item {item_id!r} in collection {c.name!r}")
        return found

    def liked(c: ServedCollection, item_id: str) -> tuple[int, np.ndarray]:
        """An item's row and aligned vector, read here so that a damaged file fails this
        request alone, not the batch it would join."""
        r = row(c, item_id)
        return r, c.image_vector(r)

    async def answer(c: ServedCollection, q: SearchQuery, shown: dict[str, str]) -> Response:
        """Built as SearchResponse documents it, sent without re-validating (the hot path)."""
        hits = await batchers[c.name].submit(q)
        results = await run_in_threadpool(_results, c, q.target, hits)
        body = {"collection": c.name, "target": q.target, "query": shown, "results": results}
        return JSONResponse(body)

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(str(STATIC / "index.html"), media_type="text/html")

    @app.get("/healthz", tags=["service"])
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/api/collections", tags=["search"])
    def list_collections() -> list[CollectionInfo]:
        """Every collection served: size, encoders, aligner and metric."""
        return [CollectionInfo(**c.describe()) for c in collections.values()]

    @app.get("/api/search", tags=["search"], response_model=SearchResponse, responses=ERRORS)
    async def search(
        q: str | None = Query(None, max_length=MAX_QUERY_CHARS, description="a caption"),
        like: str | None = Query(None, description="an item id: find more like it"),
        k: int = Query(10, ge=1, le=MAX_K),
        collection_name: str | None = Query(None, alias="collection"),
        target: Literal["image", "text"] = Query("image", description="what to find"),
    ) -> Response:
        """Text to images (`q`, target image) or captions (target text), or more like an item
        (`like`)."""
        c = collection(collection_name)
        if (q is None) == (like is None):
            raise HTTPException(400, "give one of q (a caption) or like (an item id)")
        if like is not None:
            r, vector = await run_in_threadpool(liked, c, like)
            return await answer(c, SearchQuery(k, target, vector=vector, like=r), {"like": like})
        text = q.strip() if q else ""
        if not text:
            raise HTTPException(400, "empty query: type a caption")
        return await answer(c, SearchQuery(k, target, text=text), {"text": text})

    @app.post("/api/search", tags=["search"], response_model=SearchResponse, responses=ERRORS)
    async def search_by_image(
        image: Annotated[
            UploadFile, File(description="an image file, at most 10 MB and 64 megapixels")
        ],
        k: int = Form(10, ge=1, le=MAX_K),
        collection_name: str | None = Form(None, alias="collection"),
        target: Literal["image", "text"] = Form("text", description="what to find"),
    ) -> Response:
        """An uploaded image to captions (target text) or to images (target image)."""
        c = collection(collection_name)
        data = await image.read(MAX_UPLOAD_BYTES + 1)
        if len(data) > MAX_UPLOAD_BYTES:
            raise HTTPException(413, f"upload over {MAX_UPLOAD_BYTES // 2**20} MB")
        if not data:
            raise HTTPException(400, "empty upload")
        encoder = encoders.image(c.image_encoder)
        try:
            decoded = await run_in_threadpool(decode_upload, data, MAX_UPLOAD_PIXELS)
        except ImageError as e:
            raise HTTPException(400, str(e)) from None
        pixels = await run_in_threadpool(encoder.preprocess, decoded)
        name = (image.filename or "upload")[:200]
        return await answer(c, SearchQuery(k, target, pixels=pixels), {"image": name})

    @app.get("/api/items/{item_id:path}/image", tags=["items"], responses=ERRORS)
    async def item_image(
        item_id: str, collection_name: str | None = Query(None, alias="collection")
    ) -> Response:
        """The item's thumbnail (JPEG), made from the collection's own file."""
        c = collection(collection_name)
        r = await run_in_threadpool(row, c, item_id)
        try:
            data = await run_in_threadpool(c.thumbnail, r)
        except ImageError as e:
            log.warning("thumbnail of %r: %s", item_id, e)
            raise HTTPException(404, f"the image of {item_id!r} cannot be read") from None
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": "max-age=3600"})

    @app.get("/api/items/{item_id:path}", tags=["items"], responses=ERRORS)
    def item(item_id: str, collection_name: str | None = Query(None, alias="collection")) -> Item:
        """One image of a collection with its captions."""
        c = collection(collection_name)
        (image,) = c.items.images([row(c, item_id)])
        return Item(
            id=image.id,
            collection=c.name,
            captions=image.captions,
            image_url=_image_url(c, image.id),
        )

    if allow_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware, allow_origins=allow_origins, allow_methods=["GET", "POST"]
        )
    app.add_middleware(Guard)
    return app


def _results(c: ServedCollection, target: str, hits: Hits) -> list[dict[str, Any]]:
    """The hits named (may read shards' metadata: call it off the event loop)."""
    rows = [r for r, _ in hits]
    captions: list[tuple[str | None, int]] = (
        list(c.items.captions(rows)) if target == "text" else [(None, r) for r in rows]
    )
    images = c.items.images([image for _, image in captions])
    return [
        {
            "id": image.id,
            "rank": rank,
            "score": round(score, 6),
            "captions": image.captions,
            "caption": caption,
            "image_url": _image_url(c, image.id),
        }
        for rank, ((_, score), (caption, _), image) in enumerate(
            zip(hits, captions, images, strict=True), 1
        )
    ]


def _image_url(c: ServedCollection, item_id: str) -> str:
    return f"/api/items/{quote(item_id, safe='/')}/image?collection={quote(c.name)}"


def _errors(app: FastAPI) -> None:
    """Every error a JSON {"detail": message}; a bug is logged here, never sent."""

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, e: RequestValidationError) -> JSONResponse:
        msgs = [f"{' '.join(map(str, err['loc'][1:]))}: {err['msg']}" for err in e.errors()]
        return JSONResponse({"detail": "; ".join(msgs)}, status_code=422)

    @app.exception_handler(IntegrityError)
    async def damaged(request: Request, e: IntegrityError) -> JSONResponse:
        """A collection file that no longer matches its checksum, met while answering: named
        by its folder and name (the full path is logged, not sent)."""
        log.error("%s %s: %s", request.method, request.url.path, e)
        name = f"{e.path.parent.name}/{e.path.name}"
        detail = f"a file of the collection is damaged: {name}: {e.reason}"
        return JSONResponse({"detail": detail}, status_code=409)

    @app.exception_handler(Exception)
    async def crashed(request: Request, e: Exception) -> JSONResponse:
        log.exception("%s %s failed", request.method, request.url.path)
        return JSONResponse({"detail": "internal error (logged on the server)"}, status_code=500)


def _docs(app: FastAPI) -> None:
    """Swagger UI at /docs from the swagger-ui-bundle package's files, not a CDN."""
    try:
        from swagger_ui_bundle import swagger_ui_path
    except ImportError:  # the page says how to get it; the API itself needs nothing
        swagger_ui_path = None
    if swagger_ui_path is not None:
        app.mount("/docs-assets", StaticFiles(directory=swagger_ui_path), name="docs-assets")
    # Swagger UI 4 reads OpenAPI 3.0; FastAPI's schema here uses nothing 3.1 adds beyond it
    app.openapi_version = "3.0.3"

    @app.get("/docs", include_in_schema=False)
    def docs() -> Response:
        if swagger_ui_path is None:
            raise HTTPException(404, "API docs need swagger-ui-bundle: pip install 'xmodal[serve]'")
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title="xmodal search API",
            swagger_js_url="/docs-assets/swagger-ui-bundle.js",
            swagger_css_url="/docs-assets/swagger-ui.css",
            swagger_favicon_url="/docs-assets/favicon-32x32.png",
        )


Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


class Guard:
    """Refuses a request body over the upload limit before it is read (declared length) or as
    it streams (chunked), and adds the security headers: no sniffing, and a same-origin-only
    content policy for everything but /docs (Swagger UI runs an inline script)."""

    limit = MAX_UPLOAD_BYTES + _FORM_OVERHEAD

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]]) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        declared = headers.get(b"content-length", b"0")
        if not declared.isdigit() or int(declared) > self.limit:
            return await _too_large(send)
        seen = 0
        started = False

        async def limited_receive() -> MutableMapping[str, Any]:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise _TooLarge
            return message

        csp = not scope["path"].startswith("/docs")

        async def secured_send(message: MutableMapping[str, Any]) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                extra = [(b"x-content-type-options", b"nosniff")]
                if csp:
                    extra.append((b"content-security-policy", PAGE_CSP.encode()))
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        try:
            await self.app(scope, limited_receive, secured_send)
        except _TooLarge:
            if not started:
                await _too_large(send)


class _TooLarge(Exception):
    pass


async def _too_large(send: Send) -> None:
    body = b'{"detail":"request body over the 10 MB upload limit"}'
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
