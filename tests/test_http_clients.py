#!/usr/bin/env python3
"""test_http_clients.py: real OpenAI clients against `recur serve` (CPU, bundled tiny model).

Default checks (test_http_clients):
  - the README's Python example (openai SDK + LiteLLM), run as written but for the port;
  - the official openai SDK: completions and chat completions, non-streaming and streaming
    (stream_options.include_usage), n, stop, seed; greedy text equal to the curl/plain path;
    its error types for a wrong key (AuthenticationError), an unknown model (NotFoundError)
    and a bad parameter (BadRequestError);
  - LiteLLM: completion and streaming through its OpenAI-compatible provider, and a
    litellm.Router with two deployments of the "recur" model group (the way several model
    servers are put behind one name) both pointing at this server.
With --logprobs (test_http_logprobs): logprobs on completions (logprobs: 2) and chat
(logprobs: true, top_logprobs: 2), in the OpenAI response shapes. Until the coordinator
implements logprobs it answers them with "not supported yet": that case exits 77 (skipped)
and says so; any other failure fails.

Needs RECUR_BIN, RECUR_SOURCE_DIR, and the packages openai and litellm (scripts/setup.sh
installs them into .venv-test/; CMake runs this file with that venv's python). Without
them: exit 77 (skipped), except under CI=true, where they must be there.
"""
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

KEY = "sk-local"
MODEL = "tiny-rwkv-7v0-834K-FP32"
failures = []


def check(name, cond, detail=""):
    print(("ok   " if cond else "FAIL ") + name + ("" if cond else f": {detail}"), flush=True)
    if not cond:
        failures.append(name)


def main():
    logprobs_mode = "--logprobs" in sys.argv[1:]
    try:
        import openai  # noqa: F401
        import litellm  # noqa: F401
    except ImportError as e:
        if os.environ.get("CI") == "true":
            print(f"FAIL: {e}: scripts/setup.sh must install openai and litellm into .venv-test on CI")
            return 1
        print(f"SKIP: {e} (scripts/setup.sh installs openai and litellm into .venv-test when PyPI is reachable)")
        return 77
    import openai
    import litellm
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")   # no network at import
    binp = os.environ["RECUR_BIN"]
    src = os.environ["RECUR_SOURCE_DIR"]
    tmp = tempfile.mkdtemp(prefix="recur-test-http-clients-")
    out_path, err_path = os.path.join(tmp, "serve.out"), os.path.join(tmp, "serve.err")
    with open(out_path, "w") as so, open(err_path, "w") as se:
        proc = subprocess.Popen([binp, "serve", "--port", "0", "--api-key", KEY], stdout=so, stderr=se)
    url = None
    for _ in range(300):
        m = re.search(r"^recur serve: http on (\S+)$", open(out_path).read(), re.M)
        if m:
            url = m.group(1)
            break
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    if not url:
        print("FAIL: serve did not come up:\n" + open(err_path).read()[-2000:])
        proc.kill()
        return 1
    port = url.rsplit(":", 1)[1]
    try:
        if logprobs_mode:
            rc = run_logprobs(openai, url)
        else:
            run_clients(openai, litellm, url, port, src)
            rc = 1 if failures else 0
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            prc = proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            prc = -9
    if rc != 77:
        check("serve exits 0 on SIGTERM", prc == 0, f"exit {prc}")
        rc = 1 if failures else 0
    print("all passed" if rc == 0 else ("skipped" if rc == 77 else f"{len(failures)} failed"))
    return rc


def plain_completion(url, body):
    req = urllib.request.Request(url + "/v1/completions", data=json.dumps(body).encode(),
                                 headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"})
    return json.load(urllib.request.urlopen(req, timeout=60))


def run_clients(openai, litellm, url, port, src):
    # --- the README's example, as written but for the port
    readme = open(os.path.join(src, "README.md")).read()
    m = re.search(r"<!-- test_http: python -->\s*```python\n(.*?)```", readme, re.S)
    check("README has a Python example", m is not None)
    if m:
        code = m.group(1).replace("127.0.0.1:8000", f"127.0.0.1:{port}")
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                           env=dict(os.environ, LITELLM_LOCAL_MODEL_COST_MAP="True"))
        lines = r.stdout.split("\n")
        check("README Python example runs (openai SDK + LiteLLM)", r.returncode == 0 and len(lines) >= 3
              and lines[0].strip(), (r.stdout + r.stderr)[-1500:])

    client = openai.OpenAI(base_url=url + "/v1", api_key=KEY, max_retries=0)
    # --- completions, non-streaming: == the plain HTTP answer (itself == recur generate in test_http)
    want = plain_completion(url, {"prompt": "Once upon a time", "max_tokens": 40, "temperature": 0})
    r = client.completions.create(model=MODEL, prompt="Once upon a time", max_tokens=40, temperature=0)
    check("SDK completion == plain HTTP, usage", r.choices[0].text == want["choices"][0]["text"]
          and r.choices[0].finish_reason == "length" and r.usage.prompt_tokens == 16
          and r.usage.completion_tokens == 40 and r.usage.total_tokens == 56 and r.model == MODEL,
          f"{r!r}")
    # streaming with usage
    parts, usage, finish = [], None, None
    for ch in client.completions.create(model=MODEL, prompt="Once upon a time", max_tokens=40, temperature=0,
                                        stream=True, stream_options={"include_usage": True}):
        if ch.choices:
            parts.append(ch.choices[0].text)
            finish = ch.choices[0].finish_reason or finish
        elif ch.usage:
            usage = ch.usage
    check("SDK completion stream == non-streaming, usage chunk", "".join(parts) == r.choices[0].text
          and finish == "length" and usage is not None and usage.completion_tokens == 40, f"{parts!r} {usage!r}")
    # n, seed, stop
    a = client.completions.create(model=MODEL, prompt="Once", max_tokens=12, temperature=1.0, seed=11, n=3)
    b = client.completions.create(model=MODEL, prompt="Once", max_tokens=12, temperature=1.0, seed=11, n=3)
    check("SDK n=3 with seed: 3 choices, reproducible", len(a.choices) == 3
          and [c.text for c in a.choices] == [c.text for c in b.choices]
          and sorted(c.index for c in a.choices) == [0, 1, 2] and a.usage.completion_tokens == 36)
    s = client.completions.create(model=MODEL, prompt="Once upon a time", max_tokens=40, temperature=0,
                                  stop=["the the"])
    check("SDK stop string", s.choices[0].finish_reason == "stop" and "the the" not in s.choices[0].text,
          repr(s.choices[0]))

    # --- chat
    msgs = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Hello there"}]
    c = client.chat.completions.create(model=MODEL, messages=msgs, max_tokens=20, temperature=0)
    check("SDK chat completion", c.object == "chat.completion" and c.choices[0].message.role == "assistant"
          and len(c.choices[0].message.content) > 0 and c.usage.completion_tokens == 20, repr(c))
    parts, roles, usage = [], [], None
    for ch in client.chat.completions.create(model=MODEL, messages=msgs, max_tokens=20, temperature=0, stream=True,
                                             stream_options={"include_usage": True}):
        if ch.choices:
            d = ch.choices[0].delta
            if d.role:
                roles.append(d.role)
            parts.append(d.content or "")
        elif ch.usage:
            usage = ch.usage
    check("SDK chat stream == non-streaming, one role delta, usage", "".join(parts) == c.choices[0].message.content
          and roles == ["assistant"] and usage is not None and usage.prompt_tokens == c.usage.prompt_tokens,
          f"{parts!r} {roles!r} {usage!r}")
    ids = [m.id for m in client.models.list()]
    check("SDK models.list", ids == [MODEL], repr(ids))

    # --- errors through the SDK's own exception types
    try:
        openai.OpenAI(base_url=url + "/v1", api_key="sk-wrong", max_retries=0).models.list()
        check("SDK wrong key -> AuthenticationError", False, "no error")
    except openai.AuthenticationError as e:
        check("SDK wrong key -> AuthenticationError", e.status_code == 401 and "API key" in str(e), str(e))
    try:
        client.completions.create(model="nope", prompt="x", max_tokens=2)
        check("SDK unknown model -> NotFoundError", False, "no error")
    except openai.NotFoundError as e:
        check("SDK unknown model -> NotFoundError", "nope" in str(e), str(e))
    try:
        client.completions.create(model=MODEL, prompt="x", max_tokens=2, temperature=-1)
        check("SDK bad temperature -> BadRequestError", False, "no error")
    except openai.BadRequestError as e:
        check("SDK bad temperature -> BadRequestError", "temperature" in str(e), str(e))

    # --- LiteLLM: the OpenAI-compatible provider, plain and streaming
    kw = dict(api_base=url + "/v1", api_key=KEY)
    r = litellm.completion(model=f"openai/{MODEL}", messages=msgs, max_tokens=20, temperature=0, **kw)
    check("LiteLLM completion == SDK chat", r.choices[0].message.content == c.choices[0].message.content,
          repr(r.choices[0].message.content))
    st = litellm.completion(model=f"openai/{MODEL}", messages=msgs, max_tokens=20, temperature=0, stream=True, **kw)
    text = "".join((ch.choices[0].delta.content or "") for ch in st)
    check("LiteLLM stream == SDK chat", text == c.choices[0].message.content, repr(text))
    r = litellm.text_completion(model=f"openai/{MODEL}", prompt="Once upon a time", max_tokens=40, temperature=0, **kw)
    check("LiteLLM text_completion == SDK completion", r.choices[0].text == want["choices"][0]["text"],
          repr(r.choices[0].text))
    # a Router: one model group "recur" with two deployments (both this server), as a
    # gateway puts several model servers behind one name
    router = litellm.Router(model_list=[
        {"model_name": "recur", "litellm_params": {"model": f"openai/{MODEL}", **kw}},
        {"model_name": "recur", "litellm_params": {"model": f"openai/{MODEL}", **kw}},
    ])
    outs = [router.completion(model="recur", messages=msgs, max_tokens=20, temperature=0).choices[0].message.content
            for _ in range(4)]
    check("LiteLLM Router over two deployments", all(o == c.choices[0].message.content for o in outs), repr(outs))


def run_logprobs(openai, url):
    client = openai.OpenAI(base_url=url + "/v1", api_key=KEY, max_retries=0)
    try:
        r = client.completions.create(model=MODEL, prompt="Once upon a time", max_tokens=8, temperature=0, logprobs=2)
    except openai.BadRequestError as e:
        if "not supported" in str(e):
            print(f"SKIP: the coordinator does not implement logprobs yet ({e})")
            return 77
        raise
    lp = r.choices[0].logprobs
    check("completions logprobs: 8 tokens, token_logprobs <= 0, 2 alternatives each, offsets",
          lp is not None and len(lp.tokens) == 8 and len(lp.token_logprobs) == 8
          and all(x <= 0 for x in lp.token_logprobs) and all(len(t) == 2 for t in lp.top_logprobs)
          and lp.text_offset == sorted(lp.text_offset) and "".join(lp.tokens) == r.choices[0].text, repr(lp))
    # greedy: the sampled token is the most likely one
    check("completions logprobs: greedy token is the top alternative",
          all(abs(max(t.values()) - x) < 1e-4 for t, x in zip(lp.top_logprobs, lp.token_logprobs)), repr(lp))
    c = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Hi"}], max_tokens=6,
                                       temperature=0, logprobs=True, top_logprobs=2)
    content = c.choices[0].logprobs.content if c.choices[0].logprobs else None
    check("chat logprobs: 6 entries with token, logprob, bytes, 2 top_logprobs",
          content is not None and len(content) == 6 and all(e.logprob <= 0 and len(e.top_logprobs) == 2
                                                            and e.bytes == list(e.token.encode()) for e in content),
          repr(content))
    parts = []
    for ch in client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Hi"}], max_tokens=6,
                                             temperature=0, logprobs=True, top_logprobs=2, stream=True):
        if ch.choices and ch.choices[0].logprobs and ch.choices[0].logprobs.content:
            parts.extend(ch.choices[0].logprobs.content)
    check("chat stream logprobs == non-streaming", content is not None and
          [(e.token, round(e.logprob, 4)) for e in parts] == [(e.token, round(e.logprob, 4)) for e in content])
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
