"""The web page in real headless Chromium, against `rnnkit serve` running in a subprocess.

CI installs Debian's chromium (scripts/install-browser.sh); without it this fails, never skips.
"""

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import expect, sync_playwright


CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(*args: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "rnnkit", "serve", *args, "--port", str(port),
                             "--threads", "1", "--log-level", "warning"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited early:\n{proc.stdout.read()}")
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return proc, url
        except httpx.TransportError:
            time.sleep(0.1)
    proc.kill()
    raise AssertionError("server did not start within 60 s")


def stop(proc: subprocess.Popen) -> int:
    proc.send_signal(signal.SIGINT)
    try:
        return proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise


@pytest.fixture(scope="module")
def runs(tiny_runs):
    return tiny_runs


@pytest.fixture(scope="module")
def server(runs):
    proc, url = start_server(f"sentiment={runs['clf']}", f"words={runs['lm']}")
    yield url
    assert stop(proc) == 0


@pytest.fixture(scope="module")
def browser():
    assert Path(CHROMIUM).is_file(), f"{CHROMIUM} missing: run scripts/install-browser.sh"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def test_classify_a_review_and_see_the_deciding_words(server, browser):
    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(server + "/")
    expect(page.locator("body[data-ready='1']")).to_be_attached()
    expect(page.locator("#model")).to_be_visible()  # two models served: a chooser
    page.select_option("#model", "sentiment")

    page.click("#classify")  # nothing typed yet: a message, no request
    expect(page.locator("#error")).to_contain_text("type or paste")

    review = "The story was wonderful and the actors superb, a moving film."
    page.fill("#text", review)
    page.click("#classify")
    expect(page.locator("#label")).to_have_text("pos")
    probability = float(page.locator("#probability").inner_text())
    assert 0.5 < probability <= 1.0
    expect(page.locator("#highlighted")).to_have_text(review)  # the text as typed
    pushed = page.locator("#highlighted span.pushed-for").all_inner_texts()
    assert {"wonderful", "superb", "moving"} & set(pushed), pushed
    values = [float(v) for v in page.locator("#highlighted span.token").evaluate_all(
        "spans => spans.map(s => s.dataset.contribution)")]
    assert len(values) == 13 and max(values) > 0
    assert "occlusion" in page.locator("#result").inner_text().lower()

    page.fill("#text", "dull , boring and awful")
    page.click("#classify")
    expect(page.locator("#label")).to_have_text("neg")
    assert errors == []


def test_generate_from_a_prompt(server, browser):
    page = browser.new_page()
    page.goto(server + "/")
    expect(page.locator("body[data-ready='1']")).to_be_attached()
    page.select_option("#model", "words")
    expect(page.locator("#generate-panel")).to_be_visible()
    expect(page.locator("#classify-panel")).to_be_hidden()
    expect(page.locator("#max-tokens")).to_have_value("30")  # the server's defaults
    expect(page.locator("#max-tokens")).to_have_attribute("max", "200")
    expect(page.locator("#top-p")).to_have_value("1")
    page.fill("#prompt", "the cat")
    page.fill("#max-tokens", "5")
    page.fill("#temperature", "0.8")
    page.fill("#top-k", "5")
    page.fill("#seed", "7")
    page.click("#generate")
    expect(page.locator("#generated")).to_contain_text("the cat ")

    page.fill("#max-tokens", "100000")  # over the server's limit: the error is shown
    page.click("#generate")
    expect(page.locator("#error")).to_contain_text("max_tokens")


def test_docs_page_renders_offline(server, browser):
    """/docs needs nothing from outside the server: every other request is refused."""
    page = browser.new_page()
    outside: list[str] = []

    def local_only(route) -> None:
        if route.request.url.startswith(server):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    page.route("**/*", local_only)
    page.goto(server + "/docs")
    expect(page.locator("body[data-ready='1']")).to_be_attached()
    generate = page.locator("section[data-route='POST /v1/generate']")
    expect(generate).to_contain_text("seed")
    expect(generate).to_contain_text("> 0, <= 1")  # top_p
    expect(page.locator("section[data-route='POST /v1/predict']")).to_contain_text("explain")
    expect(page.locator("a[href='/openapi.json']")).to_be_attached()
    assert outside == []


def test_shutdown_finishes_the_request_in_flight(runs):
    # A lone request waits up to --max-wait-ms for company, so it is surely in flight when
    # the signal arrives.
    proc, url = start_server(str(runs["clf"]), "--max-wait-ms", "1500")
    result: dict = {}

    def ask() -> None:
        result["response"] = httpx.post(url + "/v1/predict", json={"texts": ["superb fun"]},
                                        timeout=30)

    thread = threading.Thread(target=ask)
    thread.start()
    time.sleep(0.5)
    code = stop(proc)
    thread.join()
    assert result["response"].status_code == 200
    assert result["response"].json()["predictions"][0]["label"] == "pos"
    assert code == 0


def _chinese_reviews(n: int, seed: int = 0) -> list[tuple[str, str]]:
    """Synthetic Chinese reviews without spaces: the label is which sentiment words they hold."""
    import random

    rng = random.Random(seed)
    filler = list("的了是在我有这个们中来上大为和国地到以说时要就出会也你对生能而子那得于着下自之")
    good, bad = ["很好", "好吃", "满意", "喜欢"], ["太差", "难吃", "失望", "讨厌"]
    rows = []
    for i in range(n):
        label = "好评" if i % 2 == 0 else "差评"
        chars = [rng.choice(filler) for _ in range(rng.randint(4, 16))]
        for _ in range(rng.randint(1, 2)):
            chars.insert(rng.randrange(len(chars) + 1), rng.choice(good if i % 2 == 0 else bad))
        rows.append(("".join(chars) + "。", label))
    return rows


def test_chinese_text_is_shown_as_typed_with_each_character_marked(tmp_path, browser):
    from rnnkit import api
    from rnnkit.config import preset

    rows = _chinese_reviews(600)
    for name, part in (("train", rows[:500]), ("dev", rows[500:])):
        (tmp_path / f"{name}.tsv").write_text(
            "text\tlabel\n" + "".join(f"{t}\t{y}\n" for t, y in part), encoding="utf-8")
    cfg = preset("lstm-classifier").override(  # no tokenizer flag: the default splits it
        train=str(tmp_path / "train.tsv"), valid=str(tmp_path / "dev.tsv"), epochs=4,
        embedding_dim=16, hidden_size=16, batch_size=16, lr=0.01, min_freq=1)
    api.train_run(cfg, tmp_path / "zh", log=lambda *a, **k: None)
    proc, url = start_server(str(tmp_path / "zh"))
    try:
        page = browser.new_page()
        page.goto(url + "/")
        expect(page.locator("body[data-ready='1']")).to_be_attached()
        review = "这家店的菜很好吃，我很满意！ Good value."
        page.fill("#text", review)
        page.click("#classify")
        expect(page.locator("#label")).to_have_text("好评")
        expect(page.locator("#highlighted")).to_have_text(review)  # as typed: no added spaces
        marked = page.locator("#highlighted span.token").all_inner_texts()
        assert marked[:4] == ["这", "家", "店", "的"] and "good" not in marked
        assert "Good" in marked and "value" in marked
        # The glyphs are real characters, not the boxes of a missing font: "好" and "吃" draw
        # differently (two missing glyphs would draw the same box).
        distinct = page.evaluate("""() => {
            const draw = (ch) => { const c = document.createElement("canvas");
                c.width = c.height = 40; const g = c.getContext("2d");
                g.font = "32px sans-serif"; g.fillText(ch, 2, 34);
                return Array.from(g.getImageData(0, 0, 40, 40).data).join(","); };
            return draw("好") !== draw("吃") && draw("好") !== draw("\\u4dff\\u0378"); }""")
        assert distinct, "no CJK font: run scripts/install-browser.sh"
        shot = page.locator("#highlighted").screenshot(path=str(tmp_path / "zh.png"))
        assert shot[:8] == b"\x89PNG\r\n\x1a\n" and len(shot) > 1000
        # Both classes' probabilities are listed, the most probable first.
        rows_shown = page.locator("#probabilities tr").all_inner_texts()
        assert len(rows_shown) == 2 and rows_shown[0].startswith("好评")
    finally:
        assert stop(proc) == 0
