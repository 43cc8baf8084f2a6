"""`xpusim report`: the six key metrics per design point, equal to the API's own numbers, and the HTML page checked
in a real (headless) Chromium: table, sorting, charts drawn, no console error, no network request."""

from __future__ import annotations

import json
import os
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest
from typer.testing import CliRunner

import xpusim
from xpusim.api.report import DEFAULT_PUE, DEFAULT_USD_PER_KWH, METRICS
from xpusim.cli import app
from xpusim.engines.pareto import pareto_mask, parse_objectives
from xpusim.errors import UserError
from xpusim.hardware.chip import load_chip

runner = CliRunner()
SIX = ("accuracy", "throughput", "latency", "energy", "cost", "flexibility")


@pytest.fixture(scope="module")
def r18() -> xpusim.Report:
    # resnet18 at 64x64 keeps the capture small; a T4 at batch 1 and 8, plus an A100 at its default dtype
    return xpusim.report("resnet18", chips="t4,a100-sxm-80gb", batch=[1, 8], input_shape=(1, 3, 64, 64),
                         command="xpusim report resnet18 ...")


# ------------------------------------------------------------------------------------------- the numbers
def test_six_metrics_in_order() -> None:
    assert tuple(m.name for m in METRICS) == SIX


def test_chip_point_equals_the_roofline_api_and_hand_formulas(r18: xpusim.Report) -> None:
    assert [p.label for p in r18.points] == ["t4 · fp16 · batch 1", "t4 · fp16 · batch 8",
                                             "a100-sxm-80gb · fp16 · batch 1", "a100-sxm-80gb · fp16 · batch 8"]
    p = r18.points[1]
    est = xpusim.roofline("resnet18", chip="t4", input_shape=(8, 3, 64, 64)).estimate
    m = p.metrics
    assert m["latency_s"] == est.latency_s
    assert m["throughput_per_s"] == pytest.approx(8 / est.latency_s)  # batch / latency
    assert m["energy_j"] == pytest.approx(est.energy_j / 8)  # per sample
    t4 = load_chip("t4")
    assert t4.usd_per_hour == 0.35  # the catalog's on-demand price (GCP list price, S-price-gcp)
    assert m["cost_usd_per_million"] == pytest.approx(0.35 / (3600 * m["throughput_per_s"]) * 1e6)
    # the power part: 70 W × PUE × $/kWh for the time a million samples take
    power = 70 * DEFAULT_PUE / 1000 * DEFAULT_USD_PER_KWH * (1e6 / m["throughput_per_s"]) / 3600
    assert p.details["power_usd_per_million"] == pytest.approx(power)
    # flexibility: the FLOPs of convolutions and matmuls (all on T4's fp16 tensor cores) over all FLOPs
    wl = xpusim.analyze("resnet18", input_shape=(8, 3, 64, 64), dtype="float16")
    matrix = sum(o.flops for o in wl.ops if o.kind in ("conv", "matmul"))
    assert m["flexibility"] == pytest.approx(matrix / wl.totals().flops)
    assert m["accuracy"] is None and p.basis["accuracy"].startswith("reference")
    assert p.status == "ok"


def test_usd_per_hour_overrides_the_catalog_and_fp32_on_t4_has_no_matrix_engine() -> None:
    r = xpusim.report("resnet18", chips="t4", dtype="fp32,bf16", input_shape=(1, 3, 64, 64), usd_per_hour=1.5)
    fp32, bf16 = r.points
    thr = fp32.metrics["throughput_per_s"]
    assert fp32.metrics["cost_usd_per_million"] == pytest.approx(1.5 / (3600 * thr) * 1e6)
    assert fp32.metrics["flexibility"] == 0.0  # T4 lists fp32 only for its vector units
    assert bf16.status == "unsupported" and "no bf16 peak" in bf16.details["reason"]  # kept, not dropped


def test_a_batch_that_does_not_fit_is_marked_not_dropped() -> None:
    r = xpusim.report("llama2-7b", chips="t4", batch=[1, 64], prompt_len=512, gen_len=64)
    one, many = r.points
    est = xpusim.llm("llama2-7b", chip="t4", batch=64, prompt_len=512, gen_len=64).estimate
    assert one.status == "ok" and many.status == "does not fit"
    assert not est.fits and many.metrics["throughput_per_s"] == est.tokens_per_s
    assert many.metrics["latency_s"] == pytest.approx(est.time_to_first_token_s + 64 * est.time_per_output_token_s)
    assert many.metrics["energy_j"] == pytest.approx((est.prefill.energy_j + est.decode.energy_j) / (64 * 64))
    assert r.pareto("latency_s", "energy_j") == [True, False]  # a point that cannot run is never on the front


def test_npu_point_equals_the_npu_api() -> None:
    r = xpusim.report("resnet18", npu="16x16", dataflow="ws", input_shape=(1, 3, 32, 32))
    (p,) = r.points
    run = xpusim.npu("resnet18", array="16x16", dataflow="ws", input_shape=(1, 3, 32, 32)).run
    assert p.metrics["latency_s"] == run.time_s and p.metrics["energy_j"] == run.energy_j
    assert p.details["cycles"] == run.total_cycles
    assert p.basis["cost_usd_per_million"].startswith("electricity only")  # no hourly price for an NPU
    assert any("electricity only" in a for a in r.assumptions)


def test_compress_report_measures_accuracy_per_variant() -> None:
    r = xpusim.report("digits-cnn", compress="w8a8", chips="t4")
    c = xpusim.compress("digits-cnn", quant=["w8a8"], chips=["t4"], batch=1)
    assert [p.label for p in r.points] == ["float32 on t4", "w8a8 on t4"]
    assert [p.metrics["accuracy"] for p in r.points] == [c.baseline.value, c.variants[0].value]
    assert r.points[1].metrics["latency_s"] == c.variants[0].hardware["t4"]["latency_s"]
    assert r.pareto_pairs()[1] == ("cost_usd_per_million", "accuracy")


# ------------------------------------------------------------------------------------------- the Pareto front
def test_pareto_front_by_hand() -> None:
    pts = [{"a": 1, "b": 5}, {"a": 2, "b": 3}, {"a": 3, "b": 4}, {"a": 4, "b": 1}, {"a": 2, "b": 3},
           {"a": None, "b": 0}]
    assert pareto_mask(pts, [("a", "min"), ("b", "min")]) == [True, True, False, True, True, False]
    # (3, 4) is beaten by (2, 3); with b maximized, (1, 5) beats everything
    assert pareto_mask(pts, [("a", "min"), ("b", "max")]) == [True, False, False, False, False, False]
    three = [{"a": 1, "b": 1, "c": 9}, {"a": 1, "b": 1, "c": 1}, {"a": 0, "b": 2, "c": 5}]
    assert pareto_mask(three, [("a", "min"), ("b", "min"), ("c", "min")]) == [False, True, True]
    assert parse_objectives("latency_s,max:throughput_per_s") == [("latency_s", "min"), ("throughput_per_s", "max")]
    with pytest.raises(UserError, match="at least two"):
        parse_objectives("latency_s")


# ------------------------------------------------------------------------------------------- CLI and files
def test_cli_json_is_the_api_dict_and_the_page_embeds_it(tmp_path: Path, r18: xpusim.Report) -> None:
    out = tmp_path / "r.html"
    res = runner.invoke(app, ["report", "resnet18", "--chips", "t4,a100-sxm-80gb", "--batch", "1,8", "--input-shape",
                              "1,3,64,64", "--format", "json", "--out", str(out)])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    api = r18.to_dict()
    for d in (doc, api):
        d.pop("meta")
    assert doc == api
    html = out.read_text()
    embedded = json.loads(re.search(r'<script id="xpusim-data" type="application/json">(.*?)</script>', html,
                                    re.S).group(1))  # type: ignore[union-attr]
    assert embedded["meta"]["command"].startswith("xpusim report resnet18")
    embedded.pop("meta")
    assert embedded == api
    # self-contained: no element loads anything from a URL (script bodies, the inlined plotly.js, are code, not tags)
    links: list[str] = []

    class Tags(HTMLParser):
        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            links.extend(v or "" for k, v in attrs if k in ("src", "href"))

    Tags().feed(html)
    assert links == ["data:,"]  # the empty favicon, so the browser asks for none


@pytest.mark.parametrize(("args", "message"), [
    (["resnet18", "--chips", "t4,nope"], "unknown chip 'nope'"),
    (["/no/such/model.py:build", "--compress", "default"], "needs --data"),
    (["resnet18", "--chips", "t4", "--out", "{tmp}/missing/r.html"], "does not exist"),
    (["resnet18", "--chips", "t4", "--out", "{tmp}/r.pdf"], "the suffix must be one of .html"),
    (["resnet18", "--batch", "0,1"], "--batch '0,1'"),
    (["llama2-7b", "--npu", "32x32"], "--npu '32x32'"),
])
def test_bad_input_is_one_line_exit_2_and_no_file(tmp_path: Path, args: list[str], message: str) -> None:
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    res = runner.invoke(app, ["report", *args])
    assert res.exit_code == 2, res.output
    assert res.stderr.startswith("error: ") and message in res.stderr and "Traceback" not in res.output
    assert list(tmp_path.iterdir()) == []  # nothing half-written


# ------------------------------------------------------------------------------------------- a real browser
def _browser():  # type: ignore[no-untyped-def]
    driver_path, chrome = shutil.which("chromedriver"), shutil.which("chromium") or shutil.which("chromium-browser")
    if not (driver_path and chrome):
        if os.environ.get("CI"):
            pytest.fail("CI must have chromium and chromium-driver (.ci/run installs them)")
        pytest.skip("needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = chrome
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,2000"):
        opts.add_argument(a)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    return webdriver.Chrome(service=Service(driver_path), options=opts)


@pytest.mark.slow
def test_page_in_headless_chromium(tmp_path: Path, r18: xpusim.Report) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    page = r18.to_html(tmp_path / "report.html")
    driver = _browser()
    try:
        driver.set_page_load_timeout(60)
        driver.get(page.resolve().as_uri())
        WebDriverWait(driver, 60).until(lambda d: d.execute_script("return document.body.dataset.ready") == "1")
        heads = [th.text for th in driver.find_elements(By.CSS_SELECTOR, "#points thead th")]
        for name in SIX:
            assert any(h.startswith(name) for h in heads), (name, heads)
        rows = driver.find_elements(By.CSS_SELECTOR, "#points tbody tr")
        assert len(rows) == len(r18.points)
        # charts drawn: plotly renders SVG into each chart's div
        for chart in ("radar", "pareto-a", "pareto-b", "layers"):
            assert driver.find_elements(By.CSS_SELECTOR, f"#{chart} svg.main-svg"), chart
        assert driver.find_elements(By.CSS_SELECTOR, "#layers .scatterlayer .point")  # the per-layer roofline

        def order() -> list[str]:
            return [r.find_elements(By.TAG_NAME, "td")[0].text
                    for r in driver.find_elements(By.CSS_SELECTOR, "#points tbody tr")]

        before = order()
        latency = next(th for th in driver.find_elements(By.CSS_SELECTOR, "#points thead th")
                       if th.text.startswith("latency"))
        latency.click()  # ascending latency: both batch-1 points first
        by_latency = sorted(r18.points, key=lambda p: p.metrics["latency_s"])
        assert order() == [p.label for p in by_latency] != before
        latency.click()  # descending
        assert order() == [p.label for p in reversed(by_latency)]
        # a row click redraws the per-layer chart for that point
        driver.find_elements(By.CSS_SELECTOR, "#points tbody tr")[0].click()
        title = driver.find_element(By.CSS_SELECTOR, "#layers .gtitle").text
        assert title.startswith(order()[0])
        driver.save_screenshot(str(tmp_path / "report.png"))
        assert (tmp_path / "report.png").stat().st_size > 10_000
        errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert errors == []
        requests = [json.loads(e["message"])["message"] for e in driver.get_log("performance")]
        urls = [m["params"]["request"]["url"] for m in requests if m["method"] == "Network.requestWillBeSent"]
        assert urls and all(u.startswith(("file:", "data:", "blob:")) for u in urls), urls
    finally:
        driver.quit()
