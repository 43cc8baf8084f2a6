"""The ``xpusim`` command: parse, call `xpusim.api`, render (``--format json``: ``to_dict()``). A user mistake exits 2
with one line ``error: ...``. torch loads only to capture models (not on a cache hit; not for chips, llm, parallel)."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Any

import typer

from xpusim.api.calls import dumps
from xpusim.files import check_output
from xpusim.precision import CHIP_DTYPES
from xpusim.report.console import Format, OneLineErrors, busy, command, emit, err, out_console

app = typer.Typer(cls=OneLineErrors, add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="xpusim: how AI workloads run on AI hardware. Start with: xpusim analyze resnet50")
chips_app = typer.Typer(cls=OneLineErrors, help="The chip catalog: peaks per dtype, memory, ridge points.")
app.add_typer(chips_app, name="chips")


class Mode(StrEnum):
    inference, training = "inference", "training"


class Device(StrEnum):
    auto, meta, eager = "auto", "meta", "eager"


def _opt(default: Any, *names: str, help: str = "", **kw: Any) -> Any:
    return typer.Option(default, *names, help=help, **kw)


def _wrote(*paths: Path | None) -> None:
    for path in (p for p in paths if p is not None):
        err.print(f"wrote {path}")


MODEL = "Zoo name (resnet50, vit_b_16, llama2-7b, ...; see 'xpusim models') or file.py:factory."
LLM = "A zoo LLM (llama2-7b, gpt-175b, ...), an HF config.json or gpt:h=..,l=..,a=..,s=..[,V=..,ffn=..,kv=..]."
FMT = _opt(Format.table, "--format", "-f", help="table or json (csv where offered).")
OUT = _opt(None, "--output", "-o", help="Write JSON/CSV here instead of stdout.")
MODE = _opt(Mode.inference, "--mode", help="inference (forward) or training (forward+backward).")
BATCH, SEQ = _opt(1, "--batch", "-b", min=1), _opt(None, "--seq-len", min=1, help="Sequence length.")
SHAPE = _opt(None, "--input-shape", help="Full input shape, e.g. 1,3,64,64.")
PRICE = _opt(None, "--price-per-hour", help="USD per chip-hour, for cost.", min=0)
TP, PP = _opt(1, "--tp", min=1, help="Tensor-parallel chips."), _opt(1, "--pp", min=1, help="Pipeline stages.")
CLUSTER = _opt(None, "--cluster", help="Links for --tp/--pp (default: the chip's built-in cluster).")


@command(app, "analyze", csv=True)
def analyze_cmd(
    model: str = typer.Argument("resnet50", help=MODEL), batch: int = BATCH, input_shape: str | None = SHAPE,
    image_size: int | None = _opt(None, "--image-size", help="Square image size for vision models.", min=1),
    seq_len: int | None = SEQ, dtype: str | None = _opt(None, "--dtype", help="float32, bfloat16, float16, ..."),
    mode: Mode = MODE, device: Device = _opt(Device.auto, "--device", help="meta: no memory, no arithmetic. eager: "
                                             "real tensors (a factory's own; random weights for zoo models), so "
                                             "PyTorch takes a real run's kernels. auto: meta, else eager."),
    fmt: Format = FMT, depth: int | None = _opt(None, "--depth", min=0, help="Group rows by module path depth."),
    top: int | None = _opt(None, "--top", min=1, help="Table only: the N rows with the most FLOPs."),
    sweep: str | None = _opt(None, "--sweep", help="PARAM=V1,V2,...: batch, seq-len or image-size."),
    output: Path | None = OUT, plot: Path | None = _opt(None, "--plot", help="Also save a figure (.png/.svg/.pdf)."),
) -> None:
    """Per-layer MACs, FLOPs, params, bytes read/written and arithmetic intensity of a model."""
    from xpusim import api
    from xpusim.api import parse
    from xpusim.report import plots, tables

    common = dict(batch=batch, input_shape=parse.shape(input_shape), image_size=image_size, seq_len=seq_len,
                  dtype=dtype, mode=mode.value, device=device.value)
    if sweep:
        param, values = parse.sweep(sweep)
        with busy(f"capturing {model} at {len(values)} {param} values ...", fmt is Format.table):
            sw = api.analyze_sweep(model, param, values, **common)
        if plot is not None:
            plots.save_atomic(plots.sweep_figure(model, param, sw.results), plot)
        _wrote(plot)
        if fmt is Format.table:
            return tables.print_sweep(out_console(), model, param, sw.results)
        return emit(sw.to_json() if fmt is Format.json else sw.to_csv(), output)
    with busy(f"capturing {model} ...", fmt is Format.table):
        wl = api.analyze(model, **common)  # type: ignore[arg-type]
    if plot is not None:
        plots.save_atomic(plots.layers_figure(wl, depth), plot)
    _wrote(plot)
    if fmt is Format.table:
        return tables.print_workload(out_console(), wl, depth, top)
    emit(wl.to_json(depth) if fmt is Format.json else wl.to_csv(depth), output)


@chips_app.callback(invoke_without_command=True)
def chips_cmd(ctx: typer.Context, fmt: Format = FMT) -> None:
    """List every chip of the catalog (run 'xpusim chips compare A B ...' to put some side by side)."""
    from xpusim.hardware.chip import all_chips
    from xpusim.report.hardware import catalog_table, chip_dict

    if ctx.invoked_subcommand is not None:
        return
    if fmt is Format.csv:
        err.print("error: --format csv is not available for chips; use table or json")
        raise typer.Exit(2)
    chips = all_chips()
    emit(dumps([chip_dict(c) for c in chips])) if fmt is Format.json else out_console().print(catalog_table(chips))


@command(chips_app, "compare")
def chips_compare_cmd(names: list[str] = typer.Argument(..., help="Catalog names or chip .yaml files."),
                      dtype: str = _opt("bf16", "--dtype", help=f"One of {', '.join(CHIP_DTYPES)}."),
                      fmt: Format = FMT) -> None:
    """Two or more chips side by side at one dtype."""
    from xpusim.hardware.chip import load_chip
    from xpusim.precision import chip_dtype_name
    from xpusim.report.hardware import chip_dict, compare_table

    d, chips = chip_dtype_name(dtype), [load_chip(n) for n in names]
    emit(dumps([chip_dict(c) for c in chips])) if fmt is Format.json else out_console().print(compare_table(chips, d))


@command(app, "roofline")
def roofline_cmd(
    models: list[str] = typer.Argument(..., help="One or more zoo names or file.py:factory (compared on one chip)."),
    chip: str = _opt(..., "--chip", "-c", help="Catalog name (see 'xpusim chips') or a chip .yaml file."),
    dtype: str | None = _opt(None, "--dtype", help="fp32, tf32, bf16, fp16, fp8, int8, int4. Default: fp32 on a probed "
                                                   "host, else the first of fp16, bf16, fp32 the chip has."),
    batch: int = BATCH, input_shape: str | None = SHAPE, seq_len: int | None = SEQ, mode: Mode = MODE,
    price_per_hour: float | None = PRICE, top: int | None = _opt(None, "--top", min=1, help="The N slowest ops only."),
    fmt: Format = FMT, plot: Path | None = _opt(None, "--plot", help="Roofline and per-layer time figure."),
    measure: bool = _opt(False, "--measure", help="Also run the model for real on this CPU, layer by layer."),
    threads: int = _opt(1, "--threads", min=1, help="With --measure: CPU threads."), output: Path | None = OUT,
) -> None:
    """Time every layer of a model on a chip with the roofline model: compute- or memory-bound, and why."""
    from xpusim import api
    from xpusim.api import parse
    from xpusim.report.hardware import print_roofline

    results, shape = [], parse.shape(input_shape)
    for model in models:
        with busy(f"capturing {model} ...", fmt is Format.table):
            results.append(api.roofline(model, chip=chip, dtype=dtype, batch=batch, input_shape=shape, seq_len=seq_len,
                                        mode=mode.value, price_per_hour=price_per_hour, measure=measure,
                                        threads=threads))
    if plot is not None:
        from xpusim.report.plots import roofline_figure, save_atomic

        save_atomic(roofline_figure([r.estimate for r in results]), plot)
    _wrote(plot)
    if fmt is Format.json:
        return emit(results[0].to_json() if len(results) == 1 else dumps([r.to_dict() for r in results]), output)
    for r in results:
        print_roofline(out_console(), r, top)


@command(app, "llm")
def llm_cmd(
    model: str = typer.Argument(..., help=LLM), chip: str = _opt(..., "--chip", "-c", help="Catalog name or .yaml."),
    batch: int = BATCH, prompt_len: int = _opt(1024, "--prompt-len", min=1),
    gen_len: int = _opt(256, "--gen-len", min=0),
    w_bits: int = _opt(16, "--w-bits", help="Weight bits: 16, 8, 4, ..."), kv_bits: int = _opt(16, "--kv-bits"),
    a_bits: int = _opt(16, "--a-bits", help="Activation (compute) bits: 32, 16 or 8."),
    float16: str | None = _opt(None, "--float16", help="bf16 or fp16 (default: bf16 where the chip has it)."),
    flash: bool = _opt(True, "--flash/--no-flash", help="FlashAttention: scores stay on chip."),
    tp: int = TP, pp: int = PP, cluster: str | None = CLUSTER, price_per_hour: float | None = PRICE,
    ep: bool = _opt(False, "--ep", help="MoE: whole experts, E/tp per chip, instead of each split over --tp."),
    fmt: Format = FMT, output: Path | None = OUT,
) -> None:
    """LLM inference on one chip or tp × pp chips: TTFT, time per output token, tokens/s, memory, largest batch."""
    from xpusim import api
    from xpusim.report.hardware import print_llm

    r = api.llm(model, chip=chip, batch=batch, prompt_len=prompt_len, gen_len=gen_len, w_bits=w_bits, a_bits=a_bits,
                kv_bits=kv_bits, float16=float16, flash=flash, price_per_hour=price_per_hour, tp=tp, pp=pp, ep=ep,
                cluster=cluster, require_fit=True)
    emit(r.to_json(), output) if fmt is Format.json else print_llm(out_console(), r)


@command(app, "serve")
def serve_cmd(
    model: str = typer.Argument(..., help=LLM), chip: str = _opt(..., "--chip", "-c", help="Catalog name or .yaml."),
    tp: int = TP, pp: int = PP, cluster: str | None = CLUSTER,
    ep: bool = _opt(False, "--ep", help="MoE: whole experts, E/tp per chip, instead of each split over --tp."),
    rate: float | None = _opt(None, "--rate", help="Poisson arrivals, requests per second."),
    disaggregate: str | None = _opt(None, "--disaggregate", help="prefill=P,decode=D instances of tp*pp chips."),
    requests: int = _opt(1000, "--requests", min=1, help="How many arrive (with --rate)."),
    prompt_len: str = _opt("lognormal:1000,0.6", "--prompt-len", help="N, lognormal:MEDIAN,SIGMA or uniform:LO,HI."),
    gen_len: str = _opt("lognormal:250,0.8", "--gen-len", help="Output tokens: N, lognormal:..., uniform:..."),
    scheduler: str = _opt("sarathi", "--scheduler", help="sarathi (chunked, stall-free), vllm, static."),
    max_batch_tokens: int = _opt(8192, "--max-batch-tokens", min=1, help="Token budget per iteration."),
    max_seqs: int = _opt(256, "--max-seqs", min=1, help="Sequences running at once."),
    block_size: int = _opt(16, "--block-size", min=1, help="Tokens per KV-cache block."),
    kv_reserve: str = _opt("on-demand", "--kv-reserve", help="on-demand (vLLM) or full (TensorRT-LLM)."),
    overhead: str = _opt("vllm", "--overhead", help="CPU time per iteration: vllm, none, or milliseconds."),
    efficiency: str = _opt("measured", "--efficiency", help="measured (published GPU kernels) or ideal roofline."),
    slo: str | None = _opt(None, "--slo", help="ttft=S,tpot=S: also find the highest rate meeting them (p99)."),
    trace_file: Path | None = _opt(None, "--trace", help="Replay requests (.csv) or write a Chrome trace (.json)."),
    plot: Path | None = _opt(None, "--plot", help="Latency CDFs (.png/.svg/.pdf)."), seed: int = _opt(0, "--seed"),
    fmt: Format = FMT, output: Path | None = OUT,
) -> None:
    """LLM serving simulated request by request: continuous batching, a paged KV cache, preemption, latency SLOs."""
    from xpusim.api.serve import serve
    from xpusim.report.serve import print_serve

    with busy("simulating ...", fmt is Format.table) as progress:
        r = serve(model, chip=chip, tp=tp, pp=pp, ep=ep, cluster=cluster, rate=rate, requests=requests,
                  prompt_len=prompt_len, gen_len=gen_len, scheduler=scheduler, max_batch_tokens=max_batch_tokens,
                  max_seqs=max_seqs, block_size=block_size, overhead=overhead, efficiency=efficiency, slo=slo,
                  trace=trace_file, plot=plot, seed=seed, disaggregate=disaggregate, kv_reserve=kv_reserve,
                  progress=progress)
    emit(r.to_json(), output) if fmt is Format.json else print_serve(out_console(), r)
    _wrote(*r.wrote)


@command(app, "npu")
def npu_cmd(
    model: str | None = typer.Argument(None, help="Zoo name or file.py:factory (or use the --scalesim-* files)."),
    array: str = _opt("128x128", "--array", help="PE array ROWSxCOLS."),
    dataflow: str | None = _opt(None, "--dataflow", help="os, ws, is or auto (per layer); default ws or the .cfg's."),
    sram_kb: str | None = _opt(None, "--sram-kb", help="ifmap,filter,ofmap KiB (default SCALE-Sim's 6144,6144,2048)."),
    dram_bytes_per_cycle: float | None = _opt(None, "--dram-bytes-per-cycle", help="Default 10 (SCALE-Sim's)."),
    clock_ghz: float | None = _opt(None, "--clock-ghz", help="Default 1 GHz."),
    dtype: str = _opt("int8", "--dtype", help="Word: int4, int8, fp8, fp16, bf16, fp32."),
    macs_per_pe: int = _opt(1, "--macs-per-pe", help="Low-bit MACs per PE per cycle."),
    sparsity: str | None = _opt(None, "--sparsity", help="N:M structured sparsity the array skips, e.g. 2:4."),
    objective: str = _opt("cycles", "--objective", help="With --dataflow auto: cycles or energy."),
    batch: int = BATCH, input_shape: str | None = SHAPE, seq_len: int | None = SEQ,
    scalesim_config: Path | None = _opt(None, "--scalesim-config", help="A SCALE-Sim .cfg, read as is."),
    scalesim_topology: Path | None = _opt(None, "--scalesim-topology", help="A SCALE-Sim topology .csv."),
    check: bool = _opt(False, "--check", help="Run real numbers through the mapping and compare."),
    check_layers: int = _opt(8, "--check-layers", min=1, help="With --check: how many conv/linear layers."),
    top: int | None = _opt(None, "--top", min=1, help="The N slowest layers."), fmt: Format = FMT,
    output: Path | None = OUT,
) -> None:
    """A systolic-array NPU: cycles, stalls, SRAM/DRAM traffic and energy per layer (SCALE-Sim-compatible)."""
    from xpusim import api
    from xpusim.api import parse
    from xpusim.report.hardware import print_npu

    with busy("simulating ...", fmt is Format.table) as progress:
        r = api.npu(model, array=array, dataflow=dataflow, sram_kib=parse.sram_kib(sram_kb), dtype=dtype,
                    dram_bytes_per_cycle=dram_bytes_per_cycle, clock_ghz=clock_ghz, macs_per_pe=macs_per_pe,
                    sparsity=sparsity, objective=objective, batch=batch, input_shape=parse.shape(input_shape),
                    seq_len=seq_len, scalesim_config=scalesim_config, scalesim_topology=scalesim_topology, check=check,
                    check_layers=check_layers, progress=progress)
    emit(r.to_json(), output) if fmt is Format.json else print_npu(out_console(), r, top)
    if not r.ok:
        raise typer.Exit(1)


@command(app, "probe")
def probe_cmd(out: Path = _opt(Path("host.yaml"), "--out", "-o", help="Chip file to write."),
              threads: int = _opt(1, "--threads", min=1, help="Threads to measure with (the same for --measure).")
              ) -> None:
    """Measure this machine's roofline (matmul FLOP/s per dtype, bandwidth per memory level) into a chip file."""
    from xpusim.api.host import probe_chip_file

    check_output(out, "--out", (".yaml", ".yml"))
    with busy("probing ...") as progress:
        text, summary = probe_chip_file(out.name, threads=threads, progress=lambda s: progress(f"probing: {s}"))
    emit(text, out)
    err.print(summary)


@command(app, "parallel")
def parallel_cmd(
    model: str = typer.Argument(..., help=LLM),
    cluster: str = _opt("dgx-a100", "--cluster", help="dgx-a100, dgx-h100, hgx-b200, tpu-v5p-pod, ... or a .yaml."),
    gpus: int = _opt(..., "--gpus", "-g", min=1), tp: int = _opt(1, "--tp", min=1), pp: int = _opt(1, "--pp", min=1),
    dp: int | None = _opt(None, "--dp", min=1, help="Default: gpus / (tp·pp·cp)."),
    cp: int = _opt(1, "--cp", min=1, help="Context-parallel ranks: each sequence split over them (ring attention)."),
    batch: int | None = _opt(None, "--batch", "-b", min=1, help="Global batch (default: pp micro-batches)."),
    micro_batch: int = _opt(1, "--micro-batch", min=1), ep: int = _opt(1, "--ep", min=1, help="Expert-parallel ranks."),
    etp: int | None = _opt(None, "--etp", min=1, help="Ranks each expert is split over (default: tp)."),
    schedule: str = _opt("1f1b", "--schedule", help="gpipe, 1f1b, interleaved:V or zb-h1."),
    recompute: str = _opt("none", "--recompute", help="none, selective, full or moe (MoE layers)."),
    sp: bool = _opt(False, "--sp", help="Sequence parallelism (needs --tp > 1)."),
    flash: bool = _opt(True, "--flash/--no-flash", help="FlashAttention (off: scores, dropout in HBM)."),
    fp8: bool = _opt(False, "--fp8", help="GEMMs in FP8 (Transformer Engine's recipe; needs an fp8 chip)."),
    zero: int = _opt(0, "--zero", min=0, max=3), fsdp: str | None = _opt(None, "--fsdp", help="full or grad-op."),
    dp_overlap: bool = _opt(True, "--dp-overlap/--no-dp-overlap", help="DDP buckets during the last backward."),
    tp_overlap: bool = _opt(True, "--tp-overlap/--no-tp-overlap", help="TP backward behind weight grads (2022 on)."),
    pipe_sends: str = _opt("megatron", "--pipe-sends", help="megatron (1/tp, async) or deepspeed (whole, blocking)."),
    loss: str = _opt("megatron", "--loss", help="Cross-entropy kernels: megatron (unfused), native or te (fused)."),
    seq_len: int | None = SEQ, rank_order: str = _opt("tp-dp-pp", "--rank-order", help="tp-dp-pp or tp-pp-dp."),
    stage_layers: str | None = _opt(None, "--stage-layers", help="Uneven: embedding-loss (Megatron's) or 2,3x30,2."),
    layer_ms: str | None = _opt(None, "--layer-ms", help="Measured FWD,BWD ms of one layer and micro-batch."),
    do_search: bool = _opt(False, "--search", help="Search every valid plan for --gpus and --batch."),
    top: int = _opt(10, "--top", min=1, help="With --search: how many plans to show."),
    trace: Path | None = _opt(None, "--trace", help="Chrome/Perfetto trace (.json) of the step."),
    plot: Path | None = _opt(None, "--plot", help="Gantt chart (.png/.svg/.pdf) of the step."),
    dispatcher: str = _opt("alltoall", "--dispatcher", help="MoE tokens to experts: alltoall (NCCL) or deepep."),
    routing_skew: float = _opt(1.0, "--routing-skew", help="MoE: busiest rank's routed tokens over the mean (>= 1)."),
    fmt: Format = FMT, output: Path | None = OUT,
) -> None:
    """Training step on a cluster: step time, MFU, bubble, memory, communication per GPU; --search ranks plans."""
    from xpusim import api
    from xpusim.report.parallel import print_result, search_table, write_figures

    r = api.parallel(model, search=do_search, top=top, cluster=cluster, gpus=gpus, tp=tp, pp=pp, dp=dp, cp=cp, ep=ep,
                     etp=etp, batch=batch, dispatcher=dispatcher, routing_skew=routing_skew, micro_batch=micro_batch,
                     schedule=schedule, recompute=recompute, sp=sp, zero=zero, fsdp=fsdp, flash=flash, fp8=fp8,
                     dp_overlap=dp_overlap, seq_len=seq_len, rank_order=rank_order, stage_layers=stage_layers,
                     layer_ms=layer_ms, tp_overlap=tp_overlap, pipe_sends=pipe_sends, loss=loss)
    if fmt is Format.json:
        emit(r.to_json(), output)
    elif isinstance(r, api.SearchPlans):
        out_console().print(r.counts(), search_table(r.plans), sep="\n")
    else:
        print_result(out_console(), r.step)
    write_figures(r.step, trace, plot)
    _wrote(trace, plot)


@command(app, "run")
def run_cmd(
    plan: str = _opt("pp=2", "--plan", help="dp=N, tp=N, pp=N or combined: dp=2,tp=2,pp=2."),
    model: str = _opt("mlp:layers=8,width=1024", "--model", help="mlp:layers=N,width=W or gpt:h=..,l=..,a=..,s=.."),
    schedule: str = _opt("1f1b", "--schedule", help="Pipeline schedule: gpipe, 1f1b, interleaved, zb-h1, zbv."),
    micro_batches: int = _opt(8, "--micro-batches", help="Micro-batches per step and replica."),
    micro_batch: int | None = _opt(None, "--micro-batch", help="Samples per micro-batch (16 for mlp, 1 for gpt)."),
    virtual_stages: int | None = _opt(None, "--virtual-stages", help="Stages per rank for interleaved (default 2)."),
    steps: int = _opt(5, "--steps", help="Optimizer steps (the first is warm-up when there are 3+)."),
    zero: int = _opt(0, "--zero", help="With dp: 2 or 3 runs FSDP2 without / with resharding; 0 runs DDP."),
    fsdp: bool = _opt(False, "--fsdp", help="With dp: FSDP2 fully_shard (ZeRO-3 unless --zero 2)."),
    seed: int = _opt(0, "--seed"), timeout: float = _opt(120.0, "--timeout", help="Seconds for the whole run."),
    do_compare: bool = _opt(False, "--compare", help="Simulate the pipeline with the measured action times."),
    predict: Path | None = _opt(None, "--predict", help="Chip file ('xpusim probe -o host.yaml'): predict first."),
    check_grads: bool = _opt(False, "--check-grads", help="Compare loss and gradients with one process."),
    instrument: bool = _opt(True, "--instrument/--no-instrument", help="Per-action timestamps."),
    trace: Path | None = _opt(None, "--trace", help="The measured timeline as a Chrome/Perfetto trace."),
    fmt: Format = FMT, output: Path | None = OUT,
) -> None:
    """Run a parallel plan for real on torch.distributed (one process per rank, gloo on CPU), record the
    timeline; --predict predicts it from the cost model first, --compare simulates it with the measured times."""
    from xpusim.parallel.real.launch import launch
    from xpusim.parallel.real.spec import make_spec
    from xpusim.run import predict_first, render

    spec = make_spec(model=model, plan=plan, schedule=schedule, micro_batches=micro_batches, micro_batch=micro_batch,
                     virtual_stages=virtual_stages, steps=steps, seed=seed,
                     zero=zero, fsdp=fsdp, timeout_s=timeout, check_grads=check_grads, instrument=instrument,
                     compare=do_compare, predict=str(predict) if predict else None)
    predicted = predict_first(spec)
    err.print(f"starting {spec.ranks} ranks ({spec.plan.label()}, {spec.model.text()}), {steps} steps ...")
    render(spec, launch(spec), fmt=fmt.value, do_compare=do_compare, trace=str(trace) if trace else "", output=output,
           predicted=predicted)


@command(app, "compress")
def compress_cmd(
    task: str = typer.Argument("digits-cnn", help="digits-cnn, mnist1d-cnn, minilm, or file.py:factory with --data."),
    data: str | None = _opt(None, "--data", help="file.py:factory returning (train_x, train_y, test_x, test_y)."),
    epochs: int = _opt(0, "--epochs", min=0, help="Train a user model this many epochs first (0: already trained)."),
    quant: list[str] | None = _opt(None, "--quant", "-q", help="A quantization variant (repeatable): w8a8, "
                                   "w4a8:per-tensor, w4:group=16, w2:qat, fp8-e4m3, bf16, codebook16, pow2:4, binary, "
                                   "ternary, adder:ft=N (weights per channel unless :per-tensor)."),
    prune: list[str] | None = _opt(None, "--prune", "-p", help="A pruning variant (repeatable): 0.5, 0.5:global, 2:4, "
                                                               "0.5:structured, with :ft=N fine-tuning epochs."),
    chip: list[str] | None = _opt(None, "--chip", "-c", help="Project onto this chip (repeatable; default t4)."),
    batch: int = _opt(64, "--batch", min=1, help="Batch for the chip projection."),
    npu: str | None = _opt(None, "--npu", help="Also project onto a ROWSxCOLS systolic array."),
    seed: int = _opt(0, "--seed"), plot: Path | None = _opt(None, "--plot", help="Accuracy vs size (and latency)."),
    fmt: Format = FMT, output: Path | None = OUT,
) -> None:
    """Quantize and prune a model, measure each variant on real data (accuracy, file size, parameters, MACs,
    sparsity) and project it onto chips. Without --quant/--prune: a default set of six variants."""
    from xpusim import api
    from xpusim.report.compress import compress_table, pareto_plot

    with busy("compressing ...") as progress:
        r = api.compress(task, quant=quant, prune=prune, chips=[] if chip == ["none"] else chip, batch=batch, npu=npu,
                         data=data, epochs=epochs, seed=seed, progress=progress)
    emit(r.to_json(), output) if fmt is Format.json else compress_table(out_console(), r)
    if plot is not None:
        pareto_plot(r.task, r.baseline, r.variants, r.chips[0] if r.chips else None, plot)
    _wrote(plot)


@command(app, "report")
def report_cmd(
    model: str = typer.Argument("resnet50", help=MODEL + " An LLM gives prefill/decode points; with --compress, a "
                                "compression task (digits-cnn, mnist1d-cnn, minilm, file.py:factory with --data)."),
    chips: str | None = _opt(None, "--chips", "-c", help="Comma-separated catalog names or chip .yaml files. Default "
                             "without --npu: a100-sxm-80gb,h100-sxm,l4,t4."),
    batch: str = _opt("1", "--batch", "-b", help="Batch sizes, comma-separated: 1,32."),
    dtype: str | None = _opt(None, "--dtype", help="Comma-separated chip dtypes (fp16,int8); default per chip."),
    compress: str | None = _opt(None, "--compress", help="'default' or variants (w8a8,w4a8,...): measure each."),
    data: str | None = _opt(None, "--data", help="With --compress on file.py:factory: its data factory."),
    npu: str | None = _opt(None, "--npu", help="Systolic arrays as design points: 32x32,64x64,128x128."),
    dataflow: str = _opt("auto", "--dataflow", help="NPU dataflows, comma-separated: os, ws, is, auto."),
    prompt_len: int = _opt(1024, "--prompt-len", min=1), gen_len: int = _opt(256, "--gen-len", min=0),
    input_shape: str | None = SHAPE, seq_len: int | None = SEQ,
    usd_per_hour: float | None = _opt(None, "--usd-per-hour", min=0, help="USD per chip-hour for every chip "
                                      "(default: the catalog's on-demand price)."),
    usd_per_kwh: float | None = _opt(None, "--usd-per-kwh", min=0, help="Electricity price (default 0.0806, "
                                     "US industrial 2023)."),
    out: Path | None = _opt(None, "--out", help="Write the interactive HTML page here (self-contained, offline)."),
    fmt: Format = FMT, output: Path | None = OUT,
) -> None:
    """Judge design points on the six key metrics — accuracy, throughput, latency, energy, cost, flexibility — in
    a table and, with --out, one self-contained interactive HTML page (sortable table, radar, Pareto, roofline)."""
    from xpusim import api
    from xpusim.api import parse
    from xpusim.report.console import command_line
    from xpusim.report.metrics import print_report

    with busy("building the report ...", fmt is Format.table) as progress:
        r = api.report(model, chips=chips, batch=parse.ints(batch, "batch"), dtype=dtype, compress=compress, data=data,
                       npu=npu, dataflow=dataflow, prompt_len=prompt_len, gen_len=gen_len, seq_len=seq_len,
                       input_shape=parse.shape(input_shape), usd_per_hour=usd_per_hour, usd_per_kwh=usd_per_kwh,
                       out=out, command=command_line(), progress=progress)
    _wrote(out)
    if fmt is Format.json:
        return emit(r.to_json(), output)
    print_report(out_console(), r, hint=out is None)


@command(app, "sweep")
def sweep_cmd(
    study: Path = typer.Argument(..., help="A study .yaml: 'study: npu|roofline|llm|serve|train|compress', then its "
                                 "keys; a list is an axis, a scalar a fixed value (docs/sweep.md)."),
    out: Path | None = _opt(None, "--out", "-o", help="Parquet file, written chunk by chunk as points finish."),
    workers: int | None = _opt(None, "--workers", min=0, help="Local dask workers (default one per core; 0: a "
                               "plain loop in this process)."),
    scheduler: str | None = _opt(None, "--scheduler", help="An existing dask cluster: tcp://host:8786 or a scheduler "
                                 "file (default $DASK_SCHEDULER_ADDRESS)."),
    resume: bool = _opt(False, "--resume", help="Compute only the points --out does not hold yet."),
    force: bool = _opt(False, "--force", help="Overwrite an existing --out."),
    pareto: str | None = _opt(None, "--pareto", help="Objectives, e.g. latency_s,energy_j or max:tops,energy_j."),
    plot: Path | None = _opt(None, "--plot", help="The Pareto front on the first two objectives (.png/.svg/.pdf)."),
    batch_size: int | None = _opt(None, "--batch-size", min=1, help="Points per dask task (default per kind)."),
    timeout: float = _opt(10.0, "--timeout", min=0.1, help="Seconds to reach --scheduler before giving up."),
) -> None:
    """Run every point of a design space through the API on dask.distributed (a local cluster by default, a real
    one by address): one Parquet row per point, resumable, failing points kept as rows, Pareto fronts."""
    from xpusim.sweep import summary, sweep

    with busy("starting ...") as status:
        df = sweep(study, out=out, workers=workers, scheduler=scheduler, resume=resume, force=force, pareto=pareto,
                   plot=plot, batch_size=batch_size, connect_timeout_s=timeout, progress=lambda p: status(
                       p.line() + (f" · dashboard {p.dashboard}" if p.dashboard else "")))
    err.print(summary(df), markup=False)
    _wrote(out, plot)
    if out is None:
        out_console().print(df.to_string(max_rows=40), markup=False)


@app.command("models")
def models_cmd() -> None:
    """List the models 'xpusim analyze' knows by name."""
    from xpusim.report.tables import print_models

    print_models(out_console())


def main() -> None:
    app()


if __name__ == "__main__":
    main()
