"""The chip catalog: every file valid and sourced; bad files and names rejected with clear errors."""

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from xpusim.cli import app
from xpusim.hardware.chip import ChipError, all_chips, catalog_names, load_chip, sources

runner = CliRunner()
REQUIRED = {"v100-sxm2-32gb", "a100-sxm-40gb", "a100-sxm-80gb", "h100-sxm", "h200", "b200", "l4", "t4", "rtx-4090",
            "mi250x", "mi300x", "tpu-v4", "tpu-v5e", "tpu-v5p", "ascend-910b", "gaudi2", "gaudi3", "xeon-8480"}


def test_catalog_has_the_required_chips_and_every_source_is_defined() -> None:
    assert set(catalog_names()) >= REQUIRED
    tags = set(sources())
    for chip in all_chips():
        cited = {t.strip(" ,():;") for field in (chip.compute_source, *(m.source for m in chip.memory),
                                                 chip.tdp_source or "", chip.usd_per_hour_source or "")
                 for t in field.split() if t.startswith("S-")}
        assert (chip.usd_per_hour is None) == (chip.usd_per_hour_source is None), f"{chip.name}: price needs a source"
        assert cited, f"{chip.name}: no source tag"
        assert cited <= tags, f"{chip.name}: undefined source tags {cited - tags}"


def test_datasheet_numbers_and_derived_metrics() -> None:
    a100, h100 = load_chip("a100-sxm-80gb"), load_chip("h100-sxm")
    assert a100.peak_flops_per_s("bf16") == 312e12 and a100.main_memory.bandwidth_bytes_per_s == 2039e9
    assert a100.ridge_point("fp16") == pytest.approx(312e12 / 2039e9)  # 153.0 FLOP/B
    assert h100.ridge_point("bf16") == pytest.approx(989.4e12 / 3350e9)  # 295.3 FLOP/B
    assert h100.flops_per_watt("fp8") == pytest.approx(1978.9e12 / 700)
    assert a100.main_memory.capacity_bytes == 80 * 2**30
    assert a100.scale_up_link() is not None and a100.scale_up_link().bandwidth_bytes_per_s_per_direction == 300e9


def test_unsupported_dtype_names_what_is_supported() -> None:
    with pytest.raises(ChipError, match=r"chip t4 has no bf16 peak; it supports fp64, fp32, fp16, int8, int4"):
        load_chip("t4").require_dtype("bf16")


def test_chips_json_lists_every_chip() -> None:
    r = runner.invoke(app, ["chips", "--format", "json"])
    assert r.exit_code == 0
    chips = json.loads(r.stdout)
    assert {c["name"] for c in chips} == set(catalog_names())
    h100 = next(c for c in chips if c["name"] == "h100-sxm")
    assert h100["peak_flops_per_s"]["tensor"]["bf16"] == pytest.approx(989.4e12)
    assert h100["memory"][0]["bandwidth_bytes_per_s"] == pytest.approx(3350e9)


def test_chips_table_and_compare() -> None:
    r = runner.invoke(app, ["chips"])
    assert r.exit_code == 0 and "mi300x" in r.stdout and "1,307.4" in r.stdout
    r = runner.invoke(app, ["chips", "compare", "a100-sxm-80gb", "h100-sxm", "mi300x", "--dtype", "bf16"])
    assert r.exit_code == 0 and "295.3" in r.stdout and "153.0" in r.stdout  # ridge points


def write_chip(tmp_path: Path, edit: dict, drop: str | None = None) -> Path:
    data = yaml.safe_load(Path(load_chip.__code__.co_filename).parent.joinpath("chips", "a100-sxm-80gb.yaml")
                          .read_text())
    data.update(edit)
    if drop:
        data.pop(drop)
    p = tmp_path / "mine.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


def test_user_chip_file_loads(tmp_path: Path) -> None:
    chip = load_chip(write_chip(tmp_path, {"name": "my-npu", "tdp_w": 250}))
    assert chip.name == "my-npu" and chip.tdp_w == 250


@pytest.mark.parametrize(
    ("edit", "drop", "message"),
    [
        ({}, "compute_source", "compute_source: Field required"),
        ({"tdp_w": -5}, None, "tdp_w = -5: Input should be greater than 0"),
        ({"memory": [{"name": "HBM", "capacity_gib": 80, "bandwidth_gb_per_s": -1, "source": "x"}]}, None,
         "memory.0.bandwidth_gb_per_s = -1: Input should be greater than 0"),
        ({"dense_tflops": {"tensor": {"fp17": 3}}}, None, "dense_tflops.tensor.fp17"),
        ({"bandwidth": 3}, None, "bandwidth = 3: Extra inputs are not permitted"),
        ({"memory": [{"name": "HBM", "capacity_gib": 80, "capacity_mib": 1, "bandwidth_gb_per_s": 1, "source": "x"}]},
         None, "give exactly one of capacity_gib or capacity_mib"),
    ],
)
def test_bad_chip_file_is_one_clear_error(tmp_path: Path, edit: dict, drop: str | None, message: str) -> None:
    path = write_chip(tmp_path, edit, drop)
    r = runner.invoke(app, ["roofline", "resnet18", "--chip", str(path)])
    assert r.exit_code == 2
    assert message in r.stderr and "Traceback" not in r.stderr
    assert r.stderr.startswith(f"error: chip file {path}")


def test_unknown_chip_suggests_close_names() -> None:
    r = runner.invoke(app, ["roofline", "resnet18", "--chip", "h100"])
    assert r.exit_code == 2 and "unknown chip 'h100'. Did you mean h100-sxm" in r.stderr
    r = runner.invoke(app, ["roofline", "resnet18", "--chip", "t4", "--dtype", "bf16"])
    assert r.exit_code == 2 and "chip t4 has no bf16 peak; it supports" in r.stderr
    r = runner.invoke(app, ["chips", "compare", "a100", "--dtype", "bf16"])
    assert r.exit_code == 2 and "Did you mean" in r.stderr


def test_ridge_point_per_memory_level() -> None:
    """Gaudi 3 lists its 96 MB on-die SRAM at 12.8 TB/s: ridge 1835 TFLOP/s / 12.8 TB/s = 143.4 FLOP/B there,
    500 FLOP/B against HBM (3.67 TB/s)."""
    r = runner.invoke(app, ["chips", "--format", "json"])
    gaudi3 = next(c for c in json.loads(r.stdout) if c["name"] == "gaudi3")
    levels = gaudi3["ridge_point_by_memory_level"]
    assert levels["on-die SRAM"]["bf16"] == pytest.approx(1835e12 / 12.8e12)
    assert levels["HBM2e"]["bf16"] == pytest.approx(1835e12 / 3670e9)
