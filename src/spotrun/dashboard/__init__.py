"""The web dashboard, `/metrics` and the JSON API (`spotrun dashboard`).

Built on Starlette + uvicorn: a small ASGI stack (FastAPI's own core) whose sync endpoints run
in a thread pool, so the controller's synchronous SQLAlchemy code is reused as it is. The page
is plain JavaScript modules and CSS shipped in `static/`, with charts drawn as inline SVG: no
build step, nothing fetched from a CDN, so it installs and works offline from a clean checkout.
"""
