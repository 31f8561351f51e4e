#!/usr/bin/env python3
"""Drives headless Chromium over the DevTools protocol (--remote-debugging-pipe, standard
library only) through the hr-search page: load it, type a query, submit the form, wait for the
ranked list, check that the first result's <audio> element loads, and take a screenshot.

usage: cdp.py CHROMIUM URL QUERY OUT_DIR   -> prints one JSON object with what it saw
"""
import base64
import json
import os
import subprocess
import sys
import tempfile
import time

chromium, url, query, out_dir = sys.argv[1:5]
cmd_r, cmd_w = os.pipe()  # our commands -> Chromium's fd 3
res_r, res_w = os.pipe()  # Chromium's fd 4 -> us


def child_fds():
    # Through fresh descriptors: dup2 onto the same number would keep close-on-exec.
    a, b = os.dup(cmd_r), os.dup(res_w)
    os.dup2(a, 3)
    os.dup2(b, 4)


profile = tempfile.mkdtemp(prefix="hr-search-chromium-")
proc = subprocess.Popen(
    [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
     "--remote-debugging-pipe", f"--user-data-dir={profile}", "--window-size=1000,900",
     "about:blank"],
    preexec_fn=child_fds, close_fds=False,
    stdout=subprocess.DEVNULL, stderr=open(os.path.join(out_dir, "chromium.log"), "wb"))
os.close(cmd_r)
os.close(res_w)
reader = os.fdopen(res_r, "rb")
next_id = 0
buffered = b""


def read_message(deadline):
    global buffered
    while b"\0" not in buffered:
        if time.time() > deadline:
            raise TimeoutError("no answer from Chromium")
        chunk = os.read(res_r, 1 << 20)
        if not chunk:
            raise RuntimeError("Chromium closed the pipe")
        buffered += chunk
    msg, buffered = buffered.split(b"\0", 1)
    return json.loads(msg)


def send(method, params=None, session=None, timeout=30):
    global next_id
    next_id += 1
    msg = {"id": next_id, "method": method, "params": params or {}}
    if session:
        msg["sessionId"] = session
    os.write(cmd_w, json.dumps(msg).encode() + b"\0")
    deadline = time.time() + timeout
    while True:
        reply = read_message(deadline)
        if reply.get("id") == next_id:
            if "error" in reply:
                raise RuntimeError(f"{method}: {reply['error']}")
            return reply["result"]


def evaluate(session, expr, timeout=30):
    r = send("Runtime.evaluate", {"expression": expr, "awaitPromise": True, "returnByValue": True},
             session, timeout)
    if "exceptionDetails" in r:
        raise RuntimeError(f"{expr[:60]}: {r['exceptionDetails']}")
    return r["result"].get("value")


def wait_for(session, expr, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = evaluate(session, expr)
        if v:
            return v
        time.sleep(0.1)
    raise TimeoutError(f"waiting for {expr}")


try:
    target = send("Target.createTarget", {"url": "about:blank"})["targetId"]
    session = send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
    send("Page.enable", session=session)
    send("Page.navigate", {"url": url}, session)
    wait_for(session, "document.readyState === 'complete' && !!document.getElementById('search')")
    wait_for(session, "document.getElementById('info').textContent.length > 0")
    evaluate(session, f"document.getElementById('q').value = {json.dumps(query)};"
                      "document.getElementById('search').requestSubmit(); true")
    wait_for(session, "document.querySelectorAll('#results li.result').length > 0")
    seen = evaluate(session, """({
        ids: [...document.querySelectorAll('#results li.result')].map(li => li.dataset.id),
        scores: [...document.querySelectorAll('#results .score')].map(s => s.textContent),
        status: document.getElementById('status').textContent,
        audio: document.querySelector('#results audio').src })""")
    seen["audio_load"] = evaluate(session, """new Promise(done => {
        const a = document.querySelector('#results audio');
        const report = () => done({readyState: a.readyState, duration: a.duration,
                                   error: a.error ? a.error.code : null});
        if (a.readyState >= 1) return report();
        a.addEventListener('loadedmetadata', report);
        a.addEventListener('error', report);
        setTimeout(report, 15000);
        a.load(); })""", timeout=40)
    seen["audio_fetch"] = evaluate(session, """fetch(document.querySelector('#results audio').src)
        .then(r => r.arrayBuffer().then(b => ({status: r.status,
              type: r.headers.get('content-type'), bytes: b.byteLength})))""")
    shot = send("Page.captureScreenshot", {"format": "png"}, session)["data"]
    path = os.path.join(out_dir, "search-page.png")
    with open(path, "wb") as f:
        f.write(base64.b64decode(shot))
    seen["screenshot"] = path
    print(json.dumps(seen))
finally:
    try:
        send("Browser.close", timeout=5)
    except Exception:
        pass
    proc.kill()
    proc.wait()
