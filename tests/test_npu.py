"""The NPU simulator: cycles against SCALE-Sim 3.0.0's own reports, traffic and energy by hand, the mapper,
sparsity, the functional check, and SCALE-Sim file reading."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from xpusim.cli import app
from xpusim.engines.npu import GemmLayer, NpuConfig, NpuError, best_dataflow, simulate_gemm
from xpusim.engines.npu_check import check_conv, check_linear, tiled_gemm
from xpusim.engines.scalesim_io import read_compute_report, read_config, read_layers, read_topology, simulate_scalesim
from xpusim.engines.scalesim_mem import ConvShape, operand_matrices, simulate_layer

FIXTURES = Path(__file__).parent / "fixtures" / "scalesim"
runner = CliRunner()
STALL_FREE_CASES = sorted(p.stem for p in FIXTURES.glob("*.cfg") if not p.stem.startswith("stall"))
STALL_CASES = sorted(p.stem for p in FIXTURES.glob("stall_*.cfg"))


def _topology(case: str) -> Path:
    kind = next((k for k in ("gemm", "mixed") if f"_{k}_" in case or case.startswith(k)), "conv")
    return FIXTURES / f"{kind}_topology.csv"


@pytest.mark.parametrize("case", STALL_FREE_CASES)
def test_stall_free_cycles_equal_scalesim(case: str) -> None:
    """Expected values: SCALE-Sim 3.0.0's COMPUTE_REPORT 'Total Cycles' (benchmarks/scalesim_fixtures.py)."""
    sc = read_config(FIXTURES / f"{case}.cfg")
    layers = read_topology(FIXTURES / f"{'gemm' if case.startswith('gemm') else 'conv'}_topology.csv")
    report = read_compute_report(FIXTURES / f"{case}.compute.csv")
    assert len(layers) == len(report) >= 3
    for layer, row in zip(layers, report, strict=True):
        assert row["Stall Cycles"] == 0
        res = simulate_gemm(layer, sc.npu, sc.dataflow)
        assert res.compute_cycles == row["Total Cycles"], layer.name
        assert res.mapping_efficiency * 100 == pytest.approx(row["Mapping Efficiency %"]), layer.name


def test_stall_free_part_of_stalled_runs_is_exact_too() -> None:
    for case in STALL_CASES:
        sc = read_config(FIXTURES / f"{case}.cfg")
        layers = read_topology(_topology(case))
        report = read_compute_report(FIXTURES / f"{case}.compute.csv")
        rows = [r for layer in layers for r in [layer] * layer.groups]  # SCALE-Sim runs a DP row per channel
        for layer, row in zip(rows, report, strict=True):
            one = GemmLayer(name=layer.name, m=layer.m, n=layer.n, k=layer.k)
            assert simulate_gemm(one, sc.npu, sc.dataflow).compute_cycles == row["Total Cycles"] - row["Stall Cycles"]


@pytest.mark.parametrize("case", STALL_CASES)
def test_stall_cycles_equal_scalesim_with_small_srams(case: str) -> None:
    """Expected values: SCALE-Sim 3.0.0's COMPUTE_REPORT (Stall Cycles, Total Cycles) and DETAILED_ACCESS_REPORT
    (DRAM reads/writes per operand) for 1–2 KiB SRAMs at 1–5 words/cycle; conv, GEMM, depthwise and a window past
    the edge; 8x8, 16x4 and 4x16 arrays; ifmap/filter and ofmap bandwidths apart (benchmarks/scalesim_fixtures.py)."""
    sc = read_config(FIXTURES / f"{case}.cfg")
    assert not sc.calc_bandwidth
    report = read_compute_report(FIXTURES / f"{case}.compute.csv")
    access = read_compute_report(FIXTURES / f"{case}.access.csv")
    npu = sc.npu
    i = 0
    for layer in read_layers(_topology(case)):
        t = simulate_layer(layer.shape, sc.dataflow, npu.rows, npu.cols,
                           (npu.ifmap_sram_bytes, npu.filter_sram_bytes, npu.ofmap_sram_bytes), sc.bandwidth_words)
        for _ in range(layer.gemm.groups):  # a depthwise row is one SCALE-Sim layer per channel, all alike
            row, acc = report[i], access[i]
            where = f"{case} {layer.gemm.name} (report row {i})"
            assert t.stall_cycles == row["Stall Cycles"], where
            assert t.total_cycles == row["Total Cycles"], where
            assert t.dram_reads_ifmap == acc["DRAM IFMAP Reads"], where
            assert t.dram_reads_filter == acc["DRAM Filter Reads"], where
            assert t.dram_writes_ofmap == acc["DRAM OFMAP Writes"], where
            i += 1
    assert i == len(report) >= 3


def test_scalesim_user_mode_run_reports_its_stalls_end_to_end() -> None:
    case = "stall_mixed_ws_4x16_bw3x5"
    sc = read_config(FIXTURES / f"{case}.cfg")
    assert sc.bandwidth_words == (3, 3, 5)
    run = simulate_scalesim(sc, read_layers(_topology(case)))
    report = read_compute_report(FIXTURES / f"{case}.compute.csv")
    assert sum(r.stall_cycles for r in run.layers) == sum(r["Stall Cycles"] for r in report)
    dw = run.layers[0]
    assert dw.groups == 3 and dw.scalesim is not None
    assert dw.stall_cycles == sum(r["Stall Cycles"] for r in report[:3])
    assert dw.dram_reads.ifmap == 10 * 10 * 3  # xpusim's own DRAM count keeps each input once
    auto = simulate_scalesim(sc, read_layers(_topology(case)), dataflow="auto")
    assert all(a.total_cycles <= r.total_cycles for a, r in zip(auto.layers, run.layers, strict=True))


def test_scalesim_ifmap_addresses_by_hand() -> None:
    """12x12x3 ifmap, 3x3 filter, stride 2: SCALE-Sim's ceil rule gives 6x6 outputs, so the last window in each
    row starts at column 10 and its third column (12) is past the edge: -1, never fetched."""
    s = ConvShape(h=12, w=12, fh=3, fw=3, c=3, nf=6, stride=2)
    ifm, flt = operand_matrices(s)
    assert ifm.shape == (36, 27) and flt.shape == (27, 6)
    assert ifm[0, :6].tolist() == [0, 1, 2, 3, 4, 5]  # (y, x, c) = (0, 0, 0..2), (0, 1, 0..2)
    assert ifm[1, 0] == (0 * 12 + 2) * 3  # second output pixel: column 2
    assert ifm[5, 6] == -1 and ifm[5, 3] == (0 * 12 + 11) * 3  # window at x=10: x=12 is outside, x=11 is not
    assert flt[26, 5] == 5 * 27 + 26


def test_fold_formula_by_hand() -> None:
    """ws on 8x8: K=72 over rows (9 folds), N=16 over cols (2), 100 output pixels in time:
    18 folds x (100 + 8 preload + 8 + 8 - 2) - 1 = 2195."""
    layer = GemmLayer(name="c", m=100, n=16, k=72)
    cfg = NpuConfig(rows=8, cols=8)
    assert simulate_gemm(layer, cfg, "ws").compute_cycles == 18 * 122 - 1 == 2195
    assert simulate_gemm(layer, cfg, "os").compute_cycles == 13 * 2 * (72 + 14) - 1  # ceil(100/8)=13 row folds


def test_dram_traffic_is_the_ideal_minimum_with_large_srams() -> None:
    """Each input element, weight and output moved once: a 3x3 conv's overlapping windows are not refetched."""
    conv = GemmLayer(name="c", m=100, n=16, k=72, ifmap_unique_elems=12 * 12 * 8)
    cfg = NpuConfig(rows=8, cols=8, dtype="int8")
    for df in ("os", "ws", "is"):
        r = simulate_gemm(conv, cfg, df)
        assert r.dram_reads.ifmap == 12 * 12 * 8  # unique input, not the 100 x 72 im2col matrix
        assert r.dram_reads.filter == 72 * 16
        assert r.dram_writes.ofmap == 100 * 16 and r.dram_reads.ofmap == 0  # partial sums stayed on chip
    fp16 = simulate_gemm(conv, NpuConfig(rows=8, cols=8, dtype="fp16"), "ws")
    assert fp16.dram_reads.filter == 2 * 72 * 16


def test_small_srams_refetch_and_stall() -> None:
    layer = GemmLayer(name="c", m=4096, n=256, k=512)
    big = simulate_gemm(layer, NpuConfig(rows=32, cols=32, dram_bytes_per_cycle=64), "ws")
    small = simulate_gemm(layer, NpuConfig(rows=32, cols=32, ifmap_sram_bytes=4096, filter_sram_bytes=4096,
                                           ofmap_sram_bytes=4096, dram_bytes_per_cycle=1), "ws")
    assert small.dram_reads.ifmap == 4096 * 512 * math.ceil(256 / 32)  # refetched once per column fold
    assert small.stall_cycles > 0 and small.total_cycles > big.total_cycles
    assert small.compute_cycles == big.compute_cycles


def test_energy_by_hand() -> None:
    """int8 MAC 0.3 pJ, SRAM 1.25 pJ/B, DRAM 162.5 pJ/B (Horowitz 45 nm)."""
    layer = GemmLayer(name="g", m=64, n=32, k=48)
    r = simulate_gemm(layer, NpuConfig(rows=8, cols=8), "os")
    sram = r.sram_reads.total() + r.sram_writes.total()
    dram = r.dram_reads.total() + r.dram_writes.total()
    assert dram == 64 * 48 + 48 * 32 + 64 * 32
    assert r.energy_pj == pytest.approx(64 * 32 * 48 * 0.3 + sram * 1.25 + dram * 162.5)


def test_mapper_picks_the_fastest_dataflow() -> None:
    cfg = NpuConfig(rows=32, cols=32)
    for layer in (GemmLayer(name="tall", m=10000, n=32, k=32), GemmLayer(name="deep", m=16, n=64, k=4096)):
        best = best_dataflow(layer, cfg)
        assert best.total_cycles == min(simulate_gemm(layer, cfg, df).total_cycles for df in ("os", "ws", "is"))


def test_two_four_sparsity_halves_k_and_weight_bytes() -> None:
    layer = GemmLayer(name="g", m=256, n=64, k=512)
    dense = simulate_gemm(layer, NpuConfig(rows=16, cols=16), "ws")
    sparse = simulate_gemm(layer, NpuConfig(rows=16, cols=16, sparsity=(2, 4)), "ws")
    assert sparse.compute_cycles == simulate_gemm(GemmLayer(name="g", m=256, n=64, k=256),
                                                  NpuConfig(rows=16, cols=16), "ws").compute_cycles
    # half the weights plus a 2-bit index each (log2 4 bits per kept int8 weight)
    assert sparse.dram_reads.filter == pytest.approx(dense.dram_reads.filter / 2 * (1 + 2 / 8))


@pytest.mark.parametrize("dataflow", ["os", "ws", "is"])
def test_functional_check_bit_exact_int8_and_fp32(dataflow: str) -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(8, 12, 3, stride=2, padding=1, groups=2)
    x = torch.randn(2, 8, 11, 11)
    r = check_conv(conv, x, dataflow, 8, 4, integer=True)
    assert r.coverage_ok and r.exact
    r = check_conv(conv, x, dataflow, 8, 4, integer=False)
    assert r.coverage_ok and r.max_abs_error < 1e-5
    r = check_linear(nn.Linear(40, 24), torch.randn(5, 40), dataflow, 8, 8, integer=True)
    assert r.coverage_ok and r.exact


def test_tiled_gemm_covers_each_mac_once() -> None:
    a, b = torch.randint(-3, 4, (13, 29), dtype=torch.int8), torch.randint(-3, 4, (29, 7), dtype=torch.int8)
    out, cover, folds = tiled_gemm(a, b, "ws", 8, 4)
    assert folds == math.ceil(29 / 8) * math.ceil(7 / 4)
    assert bool((cover == 29).all())
    assert torch.equal(out, a.int() @ b.int())


def test_npu_cli_json_contract_and_check() -> None:
    r = runner.invoke(app, ["npu", "resnet18", "--array", "32x32", "--dataflow", "auto", "--format", "json"])
    assert r.exit_code == 0, r.stderr
    d = json.loads(r.stdout)
    assert {"array", "dataflow", "layers", "totals"} <= d.keys()
    gemm = [layer for layer in d["layers"] if layer["kind"] == "gemm"]
    keys = {"name", "M", "N", "K", "dataflow", "compute_cycles", "stall_cycles", "total_cycles", "utilization",
            "mapping_efficiency", "sram_reads", "sram_writes", "dram_reads", "dram_writes", "energy_j"}
    assert gemm and all(keys <= layer.keys() for layer in gemm)
    assert {"total_cycles", "energy_j", "tops", "tops_per_w"} <= d["totals"].keys()
    # every conv and the fc lowered: the GEMMs hold resnet18's 1,814,073,344 MACs (hand count), nothing lost
    assert sum(layer["M"] * layer["N"] * layer["K"] * layer["groups"] for layer in gemm) == 1_814_073_344
    r = runner.invoke(app, ["npu", "resnet18", "--array", "16x16", "--dataflow", "ws", "--check", "--input-shape",
                            "1,3,32,32"])
    assert r.exit_code == 0 and "every MAC once: yes; vs PyTorch: exact" in r.stdout


def test_npu_cli_reads_scalesim_files() -> None:
    r = runner.invoke(app, ["npu", "--scalesim-config", str(FIXTURES / "conv_ws_8x8.cfg"),
                            "--scalesim-topology", str(FIXTURES / "conv_topology.csv"), "--format", "json"])
    assert r.exit_code == 0, r.stderr
    d = json.loads(r.stdout)
    expected = [row["Total Cycles"] for row in read_compute_report(FIXTURES / "conv_ws_8x8.compute.csv")]
    assert [layer["total_cycles"] for layer in d["layers"]] == expected
    assert d["cycle_convention"] == "scalesim"
    case = "stall_gemm_is_16x4_bw2"
    r = runner.invoke(app, ["npu", "--scalesim-config", str(FIXTURES / f"{case}.cfg"),
                            "--scalesim-topology", str(FIXTURES / "gemm_topology.csv"), "--format", "json"])
    assert r.exit_code == 0, r.stderr
    d = json.loads(r.stdout)
    report = read_compute_report(FIXTURES / f"{case}.compute.csv")
    assert [layer["stall_cycles"] for layer in d["layers"]] == [row["Stall Cycles"] for row in report]
    assert [layer["total_cycles"] for layer in d["layers"]] == [row["Total Cycles"] for row in report]
    assert all(layer["scalesim"]["stall_cycles"] == layer["stall_cycles"] for layer in d["layers"])
    assert "USER bandwidth (ifmap 2, filter 2, ofmap 2 words/cycle)" in d["notes"][0]


def test_scalesim_layout_bandwidth_errors_name_the_field(tmp_path: Path) -> None:
    text = (FIXTURES / "stall_ws_8x8_bw1.cfg").read_text()
    bad = tmp_path / "bad.cfg"
    bad.write_text(text.replace("FilterSRAMBankBandwidth: 1", "FilterSRAMBankBandwidth: 0"))
    r = runner.invoke(app, ["npu", "--scalesim-config", str(bad), "--scalesim-topology",
                            str(FIXTURES / "conv_topology.csv")])
    assert r.exit_code == 2 and "[layout] FilterSRAMBankBandwidth = 0 must be >= 1" in r.stderr
    bad.write_text(text.replace("IfmapSRAMBankBandwidth: 1", "IfmapSRAMBankBandwidth: wide"))
    with pytest.raises(NpuError, match=r"\[layout\] IfmapSRAMBankBandwidth: 'wide' is not an integer"):
        read_config(bad)
    bad.write_text(text.replace("SparsitySupport: false", "SparsitySupport: true"))
    assert read_config(bad).ignored == ("[sparsity] SparsitySupport",)
    r = runner.invoke(app, ["npu", "--scalesim-config", str(bad), "--scalesim-topology",
                            str(FIXTURES / "conv_topology.csv"), "--format", "json"])
    assert r.exit_code == 0 and "not modelled, ignored: [sparsity] SparsitySupport" in json.loads(r.stdout)["notes"][1]
    assert read_config(FIXTURES / "stall_ws_8x8_bw1.cfg").ignored == ()
    old = tmp_path / "old.cfg"  # SCALE-Sim 2 style: no [layout]; Bandwidth feeds all three SRAMs
    old.write_text(text.split("[layout]")[0] + "[run_presets]\nInterfaceBandwidth: USER\n")
    assert read_config(old).bandwidth_words == (1, 1, 1)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["npu", "resnet18", "--array", "0x8"], "--array '0x8': expected ROWSxCOLS with positive sizes"),
        (["npu", "resnet18", "--dataflow", "xs"], "unknown dataflow 'xs'; use one of os, ws, is or auto"),
        (["npu", "resnet18", "--sram-kb", "1,2"], "--sram-kb '1,2': expected three positive KiB sizes"),
        (["npu", "resnet18", "--dtype", "int7"], "dtype 'int7' is not one of"),
        (["npu", "resnet18", "--sparsity", "4:2"], "sparsity 4:2: need 0 < N <= M"),
        (["npu", "resnet18", "--array", "128x128", "--sram-kb", "16,6144,2048"],
         "ifmap_sram_bytes=16384 is too small for one 128x128 tile of int8 words: double buffering needs at least "
         "32768 bytes"),
    ],
)
def test_npu_bad_input(args: list[str], message: str) -> None:
    r = runner.invoke(app, args)
    assert r.exit_code == 2 and message in r.stderr and "Traceback" not in r.stderr


def test_malformed_scalesim_files_name_line_and_field(tmp_path: Path) -> None:
    topo = tmp_path / "t.csv"
    topo.write_text("Layer name, IFMAP Height, IFMAP Width, Filter Height, Filter Width, Channels, Num Filter, "
                    "Strides,\nc1, 8, 8, 3, 3, x, 4, 1,\n")
    with pytest.raises(NpuError, match=r"t.csv line 2, field 'Channels': 'x' is not an integer"):
        read_topology(topo)
    cfg = tmp_path / "c.cfg"
    cfg.write_text((FIXTURES / "conv_ws_8x8.cfg").read_text().replace("ArrayHeight: 8\n", ""))
    r = runner.invoke(app, ["npu", "--scalesim-config", str(cfg), "--scalesim-topology", str(topo)])
    assert r.exit_code == 2 and "[architecture_presets] ArrayHeight is missing" in r.stderr


def test_scalesim_output_size_rule_differs_from_pytorch() -> None:
    """15x15 input, 3x3 filter, stride 2: SCALE-Sim ceil((15-3+2)/2) = 7 = PyTorch floor(12/2)+1 = 7; for 14x14,
    SCALE-Sim gives ceil(13/2) = 7 where PyTorch gives floor(11/2)+1 = 6."""
    layers = read_topology(FIXTURES / "conv_topology.csv")
    assert layers[1].m == 7 * 7
    with pytest.raises(NpuError, match="layer x: m=0 must be >= 1"):
        GemmLayer(name="x", m=0, n=1, k=1)


def test_bad_array_config() -> None:
    with pytest.raises(NpuError, match="rows and cols must be >= 1"):
        NpuConfig(rows=0, cols=4)


def test_vector_layers_move_bytes_at_the_npu_word_size() -> None:
    """A ReLU over 1x64x56x56 reads and writes 200,704 elements each: 401,408 bytes at int8, twice that at fp16."""
    from xpusim.engines.npu import simulate

    layers = [("relu", 200_704, 2 * 200_704, "activation")]
    int8 = simulate(layers, NpuConfig(rows=8, cols=8, dtype="int8"))
    fp16 = simulate(layers, NpuConfig(rows=8, cols=8, dtype="fp16"))
    assert int8.layers[0].dram_reads.ifmap == 401_408
    assert fp16.layers[0].dram_reads.ifmap == 802_816


@pytest.mark.parametrize("case", STALL_CASES)
def test_window_counts_give_the_reference_prefetches(case: str) -> None:
    """The replay's per-address counts of the window's lines find exactly the prefetches (same count, same demand
    cycles) that testing every request against each of its address's lines finds, on every stalled fixture."""
    import xpusim.engines.scalesim_mem as mem

    sc = read_config(FIXTURES / f"{case}.cfg")
    npu = sc.npu
    for layer in read_layers(_topology(case)):
        d = mem.demand(layer.shape, sc.dataflow, npu.rows, npu.cols)
        for fetch, stream, words, bw in ((d.ifmap_fetch, d.ifmap, npu.ifmap_sram_bytes, sc.bandwidth_words[0]),
                                         (d.filter_fetch, d.filter, npu.filter_sram_bytes, sc.bandwidth_words[1])):
            fast = mem.read_buffer_events(fetch, stream, words, bw)
            ref = mem.read_buffer_events(fetch, stream, words, bw, reference=True)
            assert np.array_equal(fast.rows, ref.rows) and fast.dram_reads == ref.dram_reads, layer.gemm.name


def test_scalesim_replay_too_large_falls_back_with_a_note(monkeypatch: pytest.MonkeyPatch) -> None:
    import xpusim.engines.scalesim_mem as mem

    case = "stall_ws_8x8_bw1"
    sc = read_config(FIXTURES / f"{case}.cfg")
    layers = read_layers(_topology(case))
    with pytest.raises(mem.ReplayTooLarge, match="15,552"):  # conv_a on ws: 100 x 72 x 2 + 72 x 16 = 15,552
        simulate_layer(layers[0].shape, "ws", 8, 8, (1024,) * 3, (1, 1, 1), max_requests=15_000)
    monkeypatch.setattr(mem, "MAX_REQUESTS", 15_000)
    run = simulate_scalesim(sc, layers)
    assert len(run.notes) == 1 and "conv_a (ws)" in run.notes[0]
    assert run.layers[0].scalesim is None and run.layers[1].scalesim is not None


def test_defaults_are_scalesim_google_cfg_and_the_energy_file() -> None:
    """SRAMs and bandwidth from SCALE-Sim's configs/google.cfg (6144, 6144, 2048 KiB; Bandwidth 10); energy per
    access from hardware/energy/horowitz-45nm.yaml, the table the roofline engine reads too."""
    import yaml

    from xpusim.engines.npu import DEFAULT_SRAM_KIB, EnergyTable, simulate
    from xpusim.engines.roofline import energy_table

    assert DEFAULT_SRAM_KIB == (6144, 6144, 2048) and all(isinstance(v, int) for v in DEFAULT_SRAM_KIB)
    cfg = NpuConfig(rows=8, cols=8)
    assert (cfg.ifmap_sram_bytes, cfg.filter_sram_bytes, cfg.ofmap_sram_bytes) == (6144 * 1024, 6144 * 1024,
                                                                                   2048 * 1024)
    assert cfg.dram_bytes_per_cycle == 10.0
    data = yaml.safe_load(Path(__file__).parents[1].joinpath("src/xpusim/hardware/energy/horowitz-45nm.yaml")
                          .read_text())
    assert data == energy_table()
    et = cfg.energy_table
    assert (et.mac_pj, et.sram_pj_per_byte, et.dram_pj_per_byte) == (0.3, 1.25, 162.5)  # 0.2 + 0.1; 10/8; 1300/8
    for dtype, pj in (("int4", 0.15), ("fp8", 0.75), ("fp16", 1.5), ("bf16", 1.5), ("fp32", 4.6)):
        assert NpuConfig(rows=8, cols=8, dtype=dtype).energy_table.mac_pj == pj == data["mac_pj"][dtype]
    # a vector op costs vector_op_mac_fraction (0.5, an NB assumption in the file) of a MAC, plus its bytes
    run = simulate([("relu", 1000, 100, "activation")], cfg)
    assert run.layers[0].energy_pj == pytest.approx(1000 * 0.3 * 0.5 + 100 * (162.5 + 1.25))
    whole = NpuConfig(rows=8, cols=8, energy=EnergyTable(mac_pj=0.3, vector_op_mac_fraction=1.0))
    assert simulate([("relu", 1000, 100, "activation")], whole).layers[0].energy_pj == pytest.approx(
        1000 * 0.3 + 100 * (162.5 + 1.25))


def test_word_sizes_come_from_the_precision_module() -> None:
    sizes = {d: NpuConfig(rows=8, cols=8, dtype=d).word_bytes for d in ("int4", "int8", "fp8", "fp16", "bf16", "fp32")}
    assert sizes == {"int4": 0.5, "int8": 1, "fp8": 1, "fp16": 2, "bf16": 2, "fp32": 4}
    with pytest.raises(NpuError, match="dtype 'fp64' is not one of int4, int8, fp8, fp16, bf16, fp32"):
        NpuConfig(rows=8, cols=8, dtype="fp64")
