#!/usr/bin/env python3
"""recur_client.py: a Python client of recur's protobuf API (proto/recur_api.proto) over
ZeroMQ, using only Debian's python3-zmq and python3-protobuf (and protoc from
protobuf-compiler, run once to generate recur_api_pb2).

As a library:

    from recur_client import RecurClient
    with RecurClient("tcp://127.0.0.1:5555") as c:
        for piece in c.generate("Once upon a time", max_tokens=40, temperature=0):
            print(piece.text, end="", flush=True)
        print(c.last_final.finish_reason)

As a program (prints the streamed text; the finish reason and usage go to stderr):

    python3 scripts/recur_client.py --connect tcp://127.0.0.1:5555 --prompt "Hello" --max-tokens 40

One RecurClient is one DEALER socket: use one per thread (ZeroMQ sockets are not
thread-safe). Requests on one socket are matched by request_id.
"""
import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import uuid

import zmq

_HERE = os.path.dirname(os.path.abspath(__file__))
_PROTO_DIR = os.path.join(os.path.dirname(_HERE), "proto")


def _load_api():
    """Imports recur_api_pb2, generating it with protoc first when it is not on the path."""
    try:
        import recur_api_pb2  # noqa: F401 (generated elsewhere and on sys.path)
        return recur_api_pb2
    except ImportError:
        pass
    src = os.path.join(_PROTO_DIR, "recur_api.proto")
    # one directory per .proto content: checkouts of different versions share /tmp safely
    with open(src, "rb") as f:
        tag = hashlib.sha256(f.read()).hexdigest()[:16]
    out = os.environ.get("RECUR_PY_GEN") or os.path.join(tempfile.gettempdir(),
                                                         "recur-py-gen-%d-%s" % (os.getuid(), tag))
    os.makedirs(out, exist_ok=True)
    gen = os.path.join(out, "recur_api_pb2.py")
    if not os.path.exists(gen) or os.path.getmtime(gen) < os.path.getmtime(src):
        # protoc writes the file whole; a concurrent first run writes the same bytes
        subprocess.run(["protoc", "--python_out=" + out, "--proto_path=" + _PROTO_DIR, src], check=True)
    sys.path.insert(0, out)
    import recur_api_pb2
    return recur_api_pb2


api = _load_api()
PROTOCOL_VERSION = api.PROTOCOL_VERSION_CURRENT
FINISH_NAMES = {api.FINISH_REASON_STOP: "stop", api.FINISH_REASON_LENGTH: "length",
                api.FINISH_REASON_CANCELLED: "cancelled", api.FINISH_REASON_ERROR: "error"}


class RecurError(Exception):
    """An ErrorResponse from the server (code: api.ErrorCode value, message: why)."""

    def __init__(self, code, message):
        super().__init__("%s: %s" % (api.ErrorCode.Name(code), message))
        self.code = code
        self.message = message


class RecurClient:
    def __init__(self, endpoint, timeout_ms=60000):
        self._ctx = zmq.Context.instance()
        self._sock = self._ctx.socket(zmq.DEALER)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.connect(endpoint)
        self.timeout_ms = timeout_ms
        self.last_final = None
        self._pending = {}   # request_id -> GenerateResponses received while reading another

    def close(self):
        self._sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _send(self, **body):
        env = api.Envelope(protocol_version=PROTOCOL_VERSION, **body)
        self._sock.send(env.SerializeToString())

    def _recv(self):
        if not self._sock.poll(self.timeout_ms):
            raise TimeoutError("no answer within %d ms" % self.timeout_ms)
        env = api.Envelope()
        env.ParseFromString(self._sock.recv())
        return env

    def _call(self, field, request, reply_field):
        self._send(**{field: request})
        while True:
            env = self._recv()
            kind = env.WhichOneof("body")
            if kind == reply_field:
                return getattr(env, reply_field)
            if kind == "error" and env.error.request_id in ("", request.request_id):
                raise RecurError(env.error.error.code, env.error.error.message)
            self._keep(env)

    def _keep(self, env):
        """Keeps a Generate stream's message (or its refusal) for that request's stream()."""
        kind = env.WhichOneof("body")
        if kind in ("generate_response", "error"):
            msg = getattr(env, kind)
            self._pending.setdefault(msg.request_id, []).append(msg)

    def health(self):
        return self._call("health", api.HealthRequest(request_id=uuid.uuid4().hex), "health_response")

    def list_models(self):
        return self._call("list_models", api.ListModelsRequest(request_id=uuid.uuid4().hex),
                          "list_models_response").models

    def start(self, prompt, request_id=None, model=None, priority=None, session_id=None, **sampling):
        """Sends a GenerateRequest and returns its request_id; read it with stream().
        session_id continues (or starts) a session."""
        rid = request_id or uuid.uuid4().hex
        req = api.GenerateRequest(request_id=rid, sampling=api.SamplingParams(**sampling))
        if session_id is not None:
            req.session_id = session_id
        if isinstance(prompt, str):
            req.text = prompt
        else:
            req.token_ids.ids.extend(prompt)
        if model is not None:
            req.model = model
        if priority is not None:
            req.priority = priority
        self._send(generate=req)
        return rid

    def next_response(self):
        """The next GenerateResponse of any request on this socket (kept ones first); a
        refused request raises RecurError (its request_id in .request_id)."""
        for rid in list(self._pending):
            if self._pending[rid]:
                return self._unwrap(self._pending[rid].pop(0))
        while True:
            env = self._recv()
            kind = env.WhichOneof("body")
            if kind in ("generate_response", "error"):
                return self._unwrap(getattr(env, kind))

    @staticmethod
    def _unwrap(msg):
        if isinstance(msg, api.ErrorResponse):
            e = RecurError(msg.error.code, msg.error.message)
            e.request_id = msg.request_id
            raise e
        return msg

    def _next_for(self, rid):
        q = self._pending.get(rid)
        if q:
            return self._unwrap(q.pop(0))
        while True:
            env = self._recv()
            kind = env.WhichOneof("body")
            if kind not in ("generate_response", "error"):
                continue
            msg = getattr(env, kind)
            if msg.request_id == rid or (kind == "error" and not msg.request_id):
                return self._unwrap(msg)
            self._keep(env)

    def stream(self, rid):
        """Yields the Tokens of request rid as they come; sets last_final at the end.
        Responses of other requests on this socket are kept for their own stream()."""
        while True:
            gr = self._next_for(rid)
            for t in gr.tokens:
                yield t
            if gr.HasField("final"):
                self._pending.pop(rid, None)
                self.last_final = gr.final
                if gr.final.finish_reason == api.FINISH_REASON_ERROR:
                    raise RecurError(gr.final.error.code, gr.final.error.message)
                return

    def generate(self, prompt, **kw):
        return self.stream(self.start(prompt, **kw))

    def complete(self, prompt, **kw):
        """The whole text of a generation, and its GenerateFinal."""
        text = "".join(t.text for t in self.generate(prompt, **kw))
        return text, self.last_final

    # ---- sessions (SessionRequest; one answer each, EXPORT a stream of chunks)

    def _session(self, op, **fields):
        rid = uuid.uuid4().hex
        self._send(session=api.SessionRequest(request_id=rid, op=op, **fields))
        while True:
            env = self._recv()
            kind = env.WhichOneof("body")
            if kind == "session_response" and env.session_response.request_id == rid:
                r = env.session_response
                if r.HasField("error"):
                    raise RecurError(r.error.code, r.error.message)
                return r
            if kind == "error" and env.error.request_id in ("", rid):
                raise RecurError(env.error.error.code, env.error.error.message)
            self._keep(env)

    def create_session(self, session_id=None, model=None):
        """A new session (the server makes up an id when none is given); its SessionInfo."""
        kw = {k: v for k, v in (("session_id", session_id), ("model", model)) if v is not None}
        return self._session(api.SESSION_OP_CREATE, **kw).info

    def get_session(self, session_id):
        return self._session(api.SESSION_OP_GET, session_id=session_id).info

    def list_sessions(self):
        return list(self._session(api.SESSION_OP_LIST).sessions)

    def delete_session(self, session_id):
        return self._session(api.SESSION_OP_DELETE, session_id=session_id).info

    def fork_session(self, session_id, new_session_id=None):
        kw = {"new_session_id": new_session_id} if new_session_id else {}
        return self._session(api.SESSION_OP_FORK, session_id=session_id, **kw).info

    def export_session(self, session_id):
        """The session's state as one portable checkpoint (bytes)."""
        r = self._session(api.SESSION_OP_EXPORT, session_id=session_id)
        rid, parts = r.request_id, []
        while True:
            if r.chunk.offset != sum(len(p) for p in parts):
                raise RuntimeError("export: chunk out of order")
            parts.append(r.chunk.data)
            if r.done:
                return b"".join(parts)
            while True:
                env = self._recv()
                if env.WhichOneof("body") == "session_response" and env.session_response.request_id == rid:
                    r = env.session_response
                    if r.HasField("error"):
                        raise RecurError(r.error.code, r.error.message)
                    break
                self._keep(env)

    def import_session(self, blob, session_id=None, chunk=4 << 20):
        """A new session from an exported checkpoint; its SessionInfo."""
        kw = {"session_id": session_id} if session_id else {}
        off = 0
        while True:
            piece = blob[off:off + chunk]
            r = self._session(api.SESSION_OP_IMPORT, chunk=api.StateChunk(offset=off, total=len(blob), data=piece), **kw)
            off += len(piece)
            if off >= len(blob):
                return r.info

    def cancel(self, rid):
        """Asks the server to stop request rid (its stream then ends CANCELLED); the
        CancelResponse is read by the next stream() call and skipped."""
        self._send(cancel=api.CancelRequest(request_id=rid))


def main():
    ap = argparse.ArgumentParser(description="stream a completion from a recur serve (protobuf API)")
    ap.add_argument("--connect", required=True, help="the endpoint recur serve printed, e.g. tcp://127.0.0.1:5555")
    ap.add_argument("--prompt")
    ap.add_argument("--max-tokens", type=int)
    ap.add_argument("--temperature", type=float)
    ap.add_argument("--seed", type=int)
    ap.add_argument("--stop", action="append")
    ap.add_argument("--health", action="store_true")
    ap.add_argument("--list-models", action="store_true")
    a = ap.parse_args()
    with RecurClient(a.connect) as c:
        if a.health:
            h = c.health()
            print(api.ServingStatus.Name(h.status), h.detail, "free_slots", h.free_slots)
            return 0 if h.status == api.SERVING_STATUS_SERVING else 1
        if a.list_models:
            for m in c.list_models():
                print(m.id, m.arch, "vocab", m.n_vocab, "tp", m.tp, "pp", m.pp)
            return 0
        if a.prompt is None:
            ap.error("--prompt (or --health / --list-models) is required")
        sampling = {k: v for k, v in (("max_tokens", a.max_tokens), ("temperature", a.temperature),
                                      ("seed", a.seed), ("stop", a.stop)) if v is not None}
        try:
            for t in c.generate(a.prompt, **sampling):
                sys.stdout.write(t.text)
                sys.stdout.flush()
        except RecurError as e:
            print("\nrecur_client: error %s" % e, file=sys.stderr)
            return 1
        f = c.last_final
        print()
        print("finished: %s; prompt %d tokens, completion %d tokens" % (
            FINISH_NAMES.get(f.finish_reason, "?"), f.usage.prompt_tokens, f.usage.completion_tokens), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
