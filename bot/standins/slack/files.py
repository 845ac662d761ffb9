"""The Slack stand-in's file uploads: Slack's three steps (an upload URL, the bytes, the completion in a channel)."""

from __future__ import annotations

from aiohttp import web

from bot.standins.slack.wire import SlackError, json_param


class Files:
    """Uploads; kept in memory, or on disk under ``upload_dir``."""

    def _m_files_getUploadURLExternal(self, params: dict) -> dict:
        filename = params.get("filename")
        length = params.get("length")
        if not filename:
            raise SlackError("invalid_arguments")
        try:
            length = int(length)
        except (TypeError, ValueError):
            raise SlackError("invalid_arguments") from None
        file_id = f"F{next(self._ids):08d}"
        self.files[file_id] = {"id": file_id, "name": filename, "length": length, "content": None,
                               "completed": False}
        return {"upload_url": f"{self.url}/upload/{file_id}", "file_id": file_id}

    async def _upload(self, request: web.Request) -> web.Response:
        file_id = request.match_info["file_id"]
        with self._lock:
            if file_id not in self.files:
                return web.Response(status=404, text="file not found")
        fault = self._take_fault("upload")
        if fault is not None:
            await request.read()
            return self._fault_response(fault)
        if self.upload_dir is None:
            data = await request.read()
            size = len(data)
        else:
            path = f"{self.upload_dir}/{file_id}"
            size = 0
            with open(path, "wb") as out:
                async for block in request.content.iter_chunked(1 << 20):
                    out.write(block)
                    size += len(block)
            data = b""
        with self._lock:
            f = self.files[file_id]
            f["content"] = data
            f["size"] = size
            if self.upload_dir is not None:
                f["path"] = path
        return web.Response(text=f"OK - {size}")

    def _m_files_completeUploadExternal(self, params: dict) -> dict:
        files = json_param(params, "files")
        if not files:
            raise SlackError("invalid_arguments")
        done = []
        for item in files:
            f = self.files.get(item.get("id", ""))
            if f is None or f["content"] is None:
                raise SlackError("file_not_found")
            f["title"] = item.get("title") or f["name"]
            f["completed"] = True
            done.append({"id": f["id"], "name": f["name"], "title": f["title"], "size": f["size"]})
        channel_id = params.get("channel_id")
        if channel_id:
            channel = self._channel(params, "channel_id")
            thread_ts = params.get("thread_ts") or None
            if thread_ts:
                self._find(channel.id, thread_ts)
            msg = {"type": "message", "user": self.bot_user_id, "bot_id": self.bot_id,
                   "text": params.get("initial_comment") or "", "ts": self._next_ts(), "channel": channel.id,
                   "files": done}
            if thread_ts:
                msg["thread_ts"] = thread_ts
            for f in done:
                self.files[f["id"]].update(channel=channel.id, thread_ts=thread_ts)
            channel.messages.append(msg)
            self._notify("file", msg)
        return {"files": done}
