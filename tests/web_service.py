"""A small web app that the service tests' template runs beside rank 0's agent.

``python web_service.py PORT`` serves on the pod IP ($KREMOTE_HOST): ``/`` a page naming its
pod, rank and working folder and the request headers it got; ``/echo`` (POST) the body back;
``/ws`` a WebSocket echo; ``/go`` a redirect to ``/``; ``/stream`` a first chunk at once and
the last after a POST to ``/release``.
"""

from __future__ import annotations

import asyncio
import html
import os
import sys

from tornado import web, websocket


class Page(web.RequestHandler):
    def get(self) -> None:
        where = (f"served by pod {os.environ.get('KUBESIM_POD_NAME', '?')} rank "
                 f"{os.environ.get('KREMOTE_RANK', '?')} from {os.getcwd()}")
        headers = ", ".join(sorted(k.lower() for k in self.request.headers))
        self.finish(f"<html><head><title>kremote web service</title></head><body>"
                    f"<h1 id='where'>{html.escape(where)}</h1>"
                    f"<p id='headers'>{html.escape(headers)}</p>"
                    f"<p id='query'>{html.escape(self.request.query)}</p></body></html>")


class Echo(web.RequestHandler):
    def post(self) -> None:
        self.finish(b"echo: " + self.request.body)


class Stream(web.RequestHandler):
    """``/stream``: one chunk at once, the rest only after ``/release`` (a streamed answer)."""

    released = asyncio.Event()

    async def get(self) -> None:
        self.write("first chunk\n")
        await self.flush()
        await Stream.released.wait()
        self.finish("last chunk\n")


class Release(web.RequestHandler):
    def post(self) -> None:
        Stream.released.set()
        self.finish("released")


class Go(web.RequestHandler):
    def get(self) -> None:
        self.redirect("/")


class Ws(websocket.WebSocketHandler):
    def on_message(self, message: str | bytes) -> None:
        self.write_message(message, binary=isinstance(message, bytes))


async def main(port: int) -> None:
    app = web.Application([(r"/", Page), (r"/echo", Echo), (r"/go", Go), (r"/ws", Ws),
                           (r"/stream", Stream), (r"/release", Release)])
    app.listen(port, address=os.environ.get("KREMOTE_HOST", "127.0.0.1"))
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
