"""SCALE-Sim 3.0.0's memory model with a user-given DRAM bandwidth, replayed from a layer's geometry.

With ``InterfaceBandwidth: USER`` SCALE-Sim times every cycle of a layer through three double-buffered SRAMs, and
its stall count follows the details of that model rather than bytes over bandwidth — so a closed form misses it
by tens of percent on small SRAMs (docs/npu.md). This module rebuilds the same memory system as data so that
``xpusim npu --scalesim-config`` reports SCALE-Sim's stall cycles for the same files. Its rules, as observed in
SCALE-Sim 3.0.0 (``memory/read_buffer.py``, ``write_buffer.py``, ``double_buffered_scratchpad_mem.py``):

**Demand.** Cycle by cycle, the addresses each array edge reads (ifmap, filter) and writes (ofmap): the operand
matrices cut into array-sized folds, padded, and skewed one cycle per row/column (the diagonal wavefront).

**Read SRAMs.** The operand's prefetch order (the fold-stacked matrix, in anti-diagonal order for the streamed
operands) is cut into "lines" of ⌈SRAM words / 100⌉ addresses each (a line is a set: an address repeated by
im2col inside one line is held once, across lines it is held again). Half the SRAM holds the active lines, half
the prefetch lines. A demanded address that no active line holds triggers a prefetch, which slides the active
window forward by the prefetch lines and takes ⌈prefetch words / bandwidth⌉ + 1 cycles after the previous
prefetch finished — prefetches run back to back from the last one, whatever the array's clock. The request's
delay grows by the prefetch's lateness, and by the lateness again when it is positive (a late prefetch counts
twice; an early one earns cycles back within that cycle's requests).

**Write SRAM.** Outputs fill bandwidth-wide lines; when more than half the SRAM is taken, half of it drains to
DRAM, one line per cycle with no write latency; an output that finds no space while a drain runs waits for it.

**Clock.** Each cycle's stall is the largest of the three SRAMs' delays; the array's clock moves on by it.

Only the timing matters here, so addresses are kept as integers per operand and never written out. Work is
vectorised over the demand stream; the clock loop visits only cycles where something misses or is written.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from xpusim.engines.npu import NpuError

ACTIVE_FRACTION = 0.5
"""SCALE-Sim's single_layer_sim: ``active_buf_frac = 0.5`` for all three SRAMs."""
LINES_PER_SRAM = 100
"""read_buffer.prepare_hashed_buffer: a line holds ⌈SRAM words / 100⌉ addresses."""
MAX_REQUESTS = 12_000_000
"""Largest number of SRAM read requests one layer's replay holds in memory: it needs about 80 bytes per request
(7.3 M requests peaked at 600 MB), so this keeps a layer near 1 GB."""


class ReplayTooLarge(NpuError):
    """A layer whose request stream exceeds `MAX_REQUESTS`."""


@dataclass(frozen=True, kw_only=True)
class ConvShape:
    """A SCALE-Sim topology row: ifmap H×W×C, filter Fh×Fw, Nf filters, one stride (no padding). A GEMM row
    M, N, K is the conv H=M, W=K, Fh=1, Fw=K, C=1, Nf=N, stride 1, as SCALE-Sim reads it."""

    h: int
    w: int
    fh: int
    fw: int
    c: int
    nf: int
    stride: int

    @property
    def oh(self) -> int:
        return math.ceil((self.h - self.fh + self.stride) / self.stride)

    @property
    def ow(self) -> int:
        return math.ceil((self.w - self.fw + self.stride) / self.stride)

    @property
    def pixels(self) -> int:
        return self.oh * self.ow

    @property
    def window(self) -> int:
        return self.fh * self.fw * self.c


@dataclass(frozen=True, kw_only=True)
class MemoryTiming:
    """One layer through SCALE-Sim's memory model."""

    compute_cycles: int
    stall_cycles: int
    total_cycles: int
    """SCALE-Sim's "Total Cycles": the last output write, stalls included."""
    dram_reads_ifmap: int
    dram_reads_filter: int
    dram_writes_ofmap: int
    prefetches_ifmap: int
    prefetches_filter: int


def operand_matrices(s: ConvShape) -> tuple[np.ndarray, np.ndarray]:
    """(ifmap im2col addresses [pixels × window], filter addresses [window × Nf]); -1 where a window runs past the
    ifmap (SCALE-Sim's ceil output-size rule can place one)."""
    pix = np.arange(s.pixels)[:, None]
    j = np.arange(s.window)[None, :]
    orow, ocol = np.divmod(pix, s.ow)
    r, rem = np.divmod(j, s.fw * s.c)
    col, ch = np.divmod(rem, s.c)
    y, x = orow * s.stride + r, ocol * s.stride + col
    ifmap = np.where((y < s.h) & (x < s.w), (y * s.w + x) * s.c + ch, -1)
    filt = np.arange(s.nf)[None, :] * s.window + np.arange(s.window)[:, None]
    return ifmap.astype(np.int64), filt.astype(np.int64)


def _folds(n: int, size: int) -> list[tuple[int, int]]:
    return [(a, min(a + size, n)) for a in range(0, n, size)]


def _pad_cols(block: np.ndarray, width: int) -> np.ndarray:
    if block.shape[1] == width:
        return block
    return np.concatenate([block, np.full((block.shape[0], width - block.shape[1]), -1, np.int64)], axis=1)


def _stack_folds(mat: np.ndarray, size: int) -> np.ndarray:
    """Column folds of ``mat`` (each padded to ``size`` columns) stacked vertically: a fetch order."""
    return np.concatenate([_pad_cols(mat[:, a:b], size) for a, b in _folds(mat.shape[1], size)], axis=0)


def _antidiagonal(mat: np.ndarray) -> np.ndarray:
    """Elements of ``mat`` by anti-diagonal (r + c), bottom row first within one: the skewed stream order (its -1
    padding kept: it takes fetch slots)."""
    return _skew(mat, -2)[1]


def _skew(mat: np.ndarray, blank: int) -> tuple[np.ndarray, np.ndarray]:
    """(cycle, element) of ``mat`` read along its skewed wavefront — column c read c cycles late, so element
    (r, c) at cycle r + c, and within one cycle by column — skipping the elements equal to ``blank``."""
    n, width = mat.shape
    padded = np.full((n + 2 * (width - 1), width), blank, np.int64)
    padded[width - 1:width - 1 + n] = mat
    # row k of the skewed matrix is (padded[width - 1 + k - c, c] for each c): a view with a diagonal stride
    s_row, s_col = padded.strides
    skewed = np.lib.stride_tricks.as_strided(padded[width - 1:], shape=(n + width - 1, width),
                                             strides=(s_row, s_col - s_row), writeable=False)
    flat = skewed.ravel()
    at = np.flatnonzero(flat != blank)
    return at // width, flat[at]


@dataclass(frozen=True)
class _Stream:
    rows: np.ndarray
    """Demand cycle of each valid request, in request order (cycle, then array edge position)."""
    addrs: np.ndarray


def _fold_stream(block: np.ndarray, base_row: int, prefix: int, skew: bool, flip: bool) -> tuple[np.ndarray, ...]:
    """(cycle, address) of one fold's valid requests, in request order."""
    if flip:
        block = block[::-1]
    if skew:
        cycle, addrs = _skew(block, -1)  # the padding (-1) is never demanded
        return base_row + prefix + cycle, addrs
    else:
        t, c = np.nonzero(block >= 0)
        rows, addrs = t, block[t, c]
    keep = addrs >= 0
    return base_row + prefix + rows[keep], addrs[keep]


def _collect(parts: list[tuple[np.ndarray, ...]]) -> _Stream:
    """Folds in fold order: their cycles do not overlap, so the concatenation is already in request order."""
    return _Stream(rows=np.concatenate([p[0] for p in parts]), addrs=np.concatenate([p[1] for p in parts]))


@dataclass(frozen=True)
class _Demand:
    ifmap_fetch: np.ndarray
    filter_fetch: np.ndarray
    ifmap: _Stream
    filter: _Stream
    ofmap_rows: np.ndarray
    """Cycle of each output write."""
    n_rows: int


def demand(s: ConvShape, dataflow: str, rows: int, cols: int) -> _Demand:
    """Fetch orders and per-cycle demand of the three operands, as SCALE-Sim's compute modules lay them out."""
    ifm, flt = operand_matrices(s)
    R, C = rows, cols
    o_rows: list[np.ndarray] = []  # the cycle of each output write, fold by fold
    if dataflow == "os":
        t = s.window
        pix_folds, filt_folds = _folds(s.pixels, R), _folds(s.nf, C)
        per_fold = t + R + C - 2
        i_parts, f_parts = [], []
        fold = 0
        for fa, fb in filt_folds:
            for pa, pb in pix_folds:
                base = fold * per_fold
                i_parts.append(_fold_stream(ifm[pa:pb].T, base, 0, True, False))
                f_parts.append(_fold_stream(flt[:, fa:fb], base, 0, True, False))
                outputs = np.zeros((pb - pa, fb - fa), np.int64)  # only where and when they are written matters
                written = _fold_stream(outputs, base, t - 1, True, True)
                o_rows.append(written[0] + (R - (pb - pa)))  # the flip runs over the padded R rows
                fold += 1
        return _Demand(ifmap_fetch=_antidiagonal(_stack_folds(ifm.T, R)),
                       filter_fetch=_antidiagonal(_stack_folds(flt, C)),
                       ifmap=_collect(i_parts), filter=_collect(f_parts), ofmap_rows=np.concatenate(o_rows),
                       n_rows=fold * per_fold)
    if dataflow not in ("ws", "is"):
        raise NpuError(f"unknown dataflow {dataflow!r}; SCALE-Sim knows os, ws and is")
    # ws and is mirror each other: one operand stays in the array (stationary, K × S_c), the other streams
    # (T × K); ws keeps the filter and streams the ifmap, is keeps the ifmap and streams the filter.
    stationary, streaming = (flt, ifm) if dataflow == "ws" else (ifm.T, flt.T)
    k, s_c = stationary.shape
    t = streaming.shape[0]
    row_folds, col_folds = _folds(k, R), _folds(s_c, C)
    per_fold = 2 * R + C + t - 2
    st_parts: list[tuple[np.ndarray, ...]] = []
    sm_parts: list[tuple[np.ndarray, ...]] = []
    fold = 0
    # The streamed operand's demand of a row fold is the same in every column fold, and the outputs' cycles depend
    # only on the fold's width: each is laid out once and shifted to its fold's first cycle.
    streamed = [_fold_stream(streaming[:, ra:rb], 0, R, True, False) for ra, rb in row_folds]
    out_rows: dict[int, np.ndarray] = {}
    for ca, cb in col_folds:
        for (ra, rb), (sm_rows, sm_addrs) in zip(row_folds, streamed, strict=True):
            base = fold * per_fold
            sm_parts.append((sm_rows + base, sm_addrs))
            block = stationary[ra:rb, ca:cb]
            flipped = _fold_stream(block, base, 0, False, True)
            st_parts.append((flipped[0] + (R - (rb - ra)), *flipped[1:]))  # padded rows sit on top after the flip
            if cb - ca not in out_rows:
                out_rows[cb - ca] = _fold_stream(np.zeros((t, cb - ca), np.int64), 0, 2 * R - 1, True, False)[0]
            o_rows.append(out_rows[cb - ca] + base)
            fold += 1
    st_fetch = _stack_folds(stationary, C)
    sm_fetch = _antidiagonal(_stack_folds(streaming, R))
    st, sm = _collect(st_parts), _collect(sm_parts)
    if dataflow == "ws":
        return _Demand(ifmap_fetch=sm_fetch, filter_fetch=st_fetch.ravel(), ifmap=sm, filter=st,
                       ofmap_rows=np.concatenate(o_rows), n_rows=fold * per_fold)
    return _Demand(ifmap_fetch=st_fetch.ravel(), filter_fetch=sm_fetch, ifmap=st, filter=sm,
                   ofmap_rows=np.concatenate(o_rows), n_rows=fold * per_fold)


@dataclass(frozen=True)
class _ReadEvents:
    rows: np.ndarray
    """Cycle of each prefetch, in order (a cycle can have several)."""
    cycles_per_prefetch: int
    dram_reads: int


def read_buffer_events(fetch: np.ndarray, stream: _Stream, sram_words: int, bw: int,
                       reference: bool = False) -> _ReadEvents:
    """The prefetches one read SRAM makes while serving ``stream``: which demand cycle triggers each.
    ``reference``: test every request against each line of its address (the first implementation, kept to check
    the default against) instead of keeping per-address counts of the window's lines."""
    active_words = math.ceil(sram_words * ACTIVE_FRACTION)
    prefetch_words = sram_words - active_words
    per_line = math.ceil(sram_words / LINES_PER_SRAM)
    valid = fetch[fetch >= 0]
    n_lines = len(valid) // per_line + 1  # the last (possibly empty) line counts too
    active = min(n_lines, math.ceil(active_words / per_line))
    step = min(n_lines - active, math.ceil(prefetch_words / per_line))
    fetch_rows = math.ceil(len(fetch) / bw)
    first_fill = min(math.ceil(active_words / bw), fetch_rows) * bw
    prefetch_lines = math.ceil(prefetch_words / bw)
    empty = _ReadEvents(rows=np.zeros(0, np.int64), cycles_per_prefetch=prefetch_lines + 1, dram_reads=first_fill)
    if active >= n_lines or len(stream.addrs) == 0:
        return empty
    if step == 0:
        raise NpuError("prefetch buffer holds no line: the SRAM is too small for SCALE-Sim's model")
    rows = (_prefetch_rows_reference if reference else _prefetch_rows)(valid, per_line, n_lines, active, step, stream)
    return _ReadEvents(rows=rows, cycles_per_prefetch=prefetch_lines + 1,
                       dram_reads=first_fill + len(rows) * prefetch_lines * bw)


def _prefetch_rows(valid: np.ndarray, per_line: int, n_lines: int, active: int, step: int,
                   stream: _Stream) -> np.ndarray:
    """The demand cycle of each prefetch. While the window stays put, whether an address is in it is a property of
    the address alone: keep, per address, how many of the window's lines hold it — a slide takes the leaving
    lines' addresses off and adds the entering ones' — and a request misses exactly when its count is zero."""
    addrs = stream.addrs
    top = int(max(valid.max(), addrs.max())) + 1
    line = np.arange(len(valid)) // per_line
    key = np.sort(line * top + valid)
    key = key[np.concatenate(([True], key[1:] != key[:-1]))]  # each line's addresses once (a line is a set)
    line_ptr = np.searchsorted(key, np.arange(n_lines + 1) * top)
    held = key % top

    def in_lines(a: int, b: int) -> np.ndarray:
        """The addresses of lines a … b − 1 (mod n_lines), once per line."""
        a, b = a % n_lines, a % n_lines + (b - a)
        if b <= n_lines:
            return held[line_ptr[a]:line_ptr[b]]
        return np.concatenate((held[line_ptr[a]:], held[:line_ptr[b - n_lines]]))

    count = np.bincount(in_lines(0, active), minlength=top)
    events: list[int] = []
    start, pos, chunk, total, last_miss = 0, 0, 256, len(addrs), 0
    while pos < total:
        hi = min(total, pos + chunk)
        missing = count[addrs[pos:hi]] == 0
        first = int(np.argmax(missing))
        if not missing[first]:
            pos, chunk = hi, min(chunk * 2, 1 << 16)
            continue
        miss = pos + first
        row, addr = int(stream.rows[miss]), int(addrs[miss])
        for _ in range(n_lines + 1):
            count -= np.bincount(in_lines(start, start + step), minlength=top)
            count += np.bincount(in_lines(start + active, start + active + step), minlength=top)
            start = (start + step) % n_lines
            events.append(row)
            if count[addr] > 0:
                break
        else:
            raise NpuError(f"address {addr} is demanded but never fetched (internal error in the demand layout)")
        # the next miss is likely about as far as this one was from the last: scan a little past that
        pos, chunk, last_miss = miss + 1, max(64, (miss - last_miss) * 5 // 4), miss
    return np.asarray(events, np.int64)


def _prefetch_rows_reference(valid: np.ndarray, per_line: int, n_lines: int, active: int, step: int,
                             stream: _Stream) -> np.ndarray:
    """`_prefetch_rows` by testing each request's address against every line that holds it."""
    # Each address's lines (a sorted, de-duplicated CSR), to test "in the active window" for many at once.
    line = np.arange(len(valid)) // per_line
    pairs = np.sort(valid * n_lines + line)
    pairs = pairs[np.concatenate(([True], pairs[1:] != pairs[:-1]))]
    addr_of, line_of = np.divmod(pairs, n_lines)
    top = int(max(valid.max(), stream.addrs.max())) + 2
    ptr = np.cumsum(np.bincount(addr_of + 1, minlength=top))
    counts = ptr[stream.addrs + 1] - ptr[stream.addrs]
    if (counts == 0).any():
        bad = int(stream.addrs[np.argmax(counts == 0)])
        raise NpuError(f"address {bad} is demanded but never fetched (internal error in the demand layout)")
    single = counts == 1

    # Each address's lines as one row, padded by repeating its first line, for a branch-free test.
    per_addr = np.diff(ptr)
    width = int(per_addr.max())
    table = np.repeat(line_of[ptr[:-1].clip(max=len(line_of) - 1)].astype(np.int32)[:, None], width, axis=1)
    table[addr_of, np.arange(len(addr_of)) - ptr[addr_of]] = line_of
    single_line = table[:, 0]

    def inside(lines: np.ndarray, start: int) -> np.ndarray:
        end = start + active
        if end <= n_lines:
            return (lines >= start) & (lines < end)
        return (lines >= start) | (lines < end - n_lines)  # the window wraps around

    # The usual case: every demanded address sits in one line. Then each request's line is known up front, and
    # "outside the window [start, start + active) mod n_lines" is one unsigned comparison per request.
    req_line = single_line[stream.addrs].astype(np.uint32) if single.all() and n_lines < 2**31 else None

    def misses(lo: int, hi: int, start: int) -> np.ndarray:
        """Does each request miss the active window [start, start + active) (mod n_lines)?"""
        if req_line is not None:  # in uint32 a line below the origin wraps to a huge distance
            if start + active <= n_lines:  # outside [start, start + active)
                return (req_line[lo:hi] - np.uint32(start)) >= active
            return (req_line[lo:hi] - np.uint32(start + active - n_lines)) < n_lines - active  # in the gap
        return ~np.asarray(inside(table[stream.addrs[lo:hi]], start).any(axis=1))

    events: list[int] = []
    start, pos, chunk, total, last_miss = 0, 0, 256, len(stream.addrs), 0
    while pos < total:
        hi = min(total, pos + chunk)
        m = misses(pos, hi, start)
        first = int(np.argmax(m))
        if not m[first]:
            pos, chunk = hi, min(chunk * 2, 1 << 16)
            continue
        miss = pos + first
        lines = line_of[ptr[stream.addrs[miss]]:ptr[stream.addrs[miss] + 1]]
        row = int(stream.rows[miss])
        for _ in range(n_lines + 1):
            start = (start + step) % n_lines
            events.append(row)
            if (((lines - start) % n_lines) < active).any():
                break
        else:  # pragma: no cover - the window covers every line within n_lines slides
            raise NpuError("read buffer replay did not converge")
        # the next miss is likely about as far as this one was from the last: scan a little past that
        pos, chunk, last_miss = miss + 1, max(64, (miss - last_miss) * 5 // 4), miss
    return np.asarray(events, np.int64)


class _WriteBuffer:
    """The ofmap SRAM: fills bandwidth-wide lines, drains half of itself to DRAM when more than half is full."""

    def __init__(self, sram_words: int, bw: int) -> None:
        self.total = sram_words
        self.active = math.ceil(sram_words * ACTIVE_FRACTION)
        self.drain_words = sram_words - self.active
        self.bw = bw
        self.drain_lines = math.ceil(self.drain_words / bw)
        self.free = sram_words
        self.drain_end = 0
        self.line_fill = 0
        self.lines: list[int] = []  # words in each line handed to the drain queue
        self.drained = 0
        self.dram_writes = 0

    def store(self, n: int) -> None:
        self.free -= n
        fill = self.line_fill + n
        full, self.line_fill = divmod(fill, self.bw)
        self.lines.extend([self.bw] * full)

    def _drain(self, cycle: int) -> int:
        if self.line_fill:
            self.lines.append(self.line_fill)
            self.line_fill = 0
        end = min(self.drained + self.drain_lines, len(self.lines))
        n = end - self.drained
        if n == 0:
            return cycle
        words = n * self.bw - (self.bw - self.lines[end - 1])
        self.free += words
        self.dram_writes += words
        self.drained = end
        return cycle + n - 1  # one line per cycle; SCALE-Sim's write port has no latency

    def write(self, cycle: int, n: int) -> int:
        """Store ``n`` outputs demanded at ``cycle``; returns the cycles the array waits."""
        cur, left = cycle, n
        while left:
            if cur < self.drain_end:
                k = min(left, max(self.free, 1))  # the store that leaves no space waits for the drain
                self.store(k)
                left -= k
                if self.free <= 0:
                    cur = self.drain_end
            else:
                k = min(left, max(self.free - self.active + 1, 1))  # up to the store that crosses half full
                self.store(k)
                left -= k
                if self.free < self.active:
                    self.drain_end = self._drain(cur)
        return cur - cycle

    def flush(self) -> None:
        if self.line_fill:
            self.lines.append(self.line_fill)
            self.line_fill = 0
        while self.drained < len(self.lines):
            self._drain(0)


def _run_lengths(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(values, counts) of a sorted array — `np.unique` without its sort (the output cycles come in order)."""
    if len(x) == 0:
        return x, np.zeros(0, np.int64)
    starts = np.flatnonzero(np.concatenate(([True], x[1:] != x[:-1])))
    return x[starts], np.diff(np.append(starts, len(x)))


def _merge_unique(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The sorted union of two sorted arrays of distinct values."""
    merged = np.concatenate((a, b))
    merged.sort(kind="stable")  # two sorted runs: timsort merges them in linear time
    return _run_lengths(merged)[0]


def read_requests(s: ConvShape, dataflow: str, rows: int, cols: int) -> int:
    """ifmap + filter SRAM read requests of one layer (an upper bound: edge windows counted)."""
    npix, k, nf = s.pixels, s.window, s.nf
    if dataflow == "ws":
        return npix * k * math.ceil(nf / cols) + k * nf
    if dataflow == "os":
        return npix * k * math.ceil(nf / cols) + k * nf * math.ceil(npix / rows)
    return k * npix + nf * k * math.ceil(npix / cols)


def simulate_layer(s: ConvShape, dataflow: str, rows: int, cols: int, sram_words: tuple[int, int, int],
                   bandwidth: tuple[int, int, int], max_requests: int | None = None) -> MemoryTiming:
    """Stall, total cycles and DRAM traffic of one layer in SCALE-Sim's USER-bandwidth memory model.

    ``sram_words``/``bandwidth``: (ifmap, filter, ofmap) SRAM sizes in words and DRAM words per cycle (SCALE-Sim
    takes the ifmap/filter ones from its [layout] bank bandwidths and the ofmap one from ``Bandwidth``).
    """
    for name, v in (("rows", rows), ("cols", cols), *zip(("ifmap SRAM", "filter SRAM", "ofmap SRAM"), sram_words,
                                                          strict=True),
                    *zip(("ifmap bandwidth", "filter bandwidth", "ofmap bandwidth"), bandwidth, strict=True)):
        if v < 1:
            raise NpuError(f"{name} = {v} must be >= 1")
    requests = read_requests(s, dataflow, rows, cols)
    limit = MAX_REQUESTS if max_requests is None else max_requests
    if requests > limit:
        raise ReplayTooLarge(f"{requests:,} SRAM read requests, more than the replay's {limit:,}")
    d = demand(s, dataflow, rows, cols)
    ev_i = read_buffer_events(d.ifmap_fetch, d.ifmap, sram_words[0], bandwidth[0])
    ev_f = read_buffer_events(d.filter_fetch, d.filter, sram_words[1], bandwidth[1])
    wb = _WriteBuffer(sram_words[2], bandwidth[2])

    o_rows, o_counts = _run_lengths(d.ofmap_rows)
    by_row: dict[int, list[list[int]]] = {}
    for which, ev in enumerate((ev_i, ev_f)):
        for k, r in enumerate(ev.rows.tolist()):
            by_row.setdefault(r, [[], []])[which].append(k + 1)  # k+1-th prefetch of that SRAM
    last_prefetch = (ev_i.cycles_per_prefetch, ev_f.cycles_per_prefetch)

    # Every cycle where something happens, in order: its writes, and whether a read SRAM prefetches.
    rows_all = _merge_unique(o_rows, np.fromiter(sorted(by_row), np.int64, len(by_row)))
    n_writes = np.zeros(len(rows_all), np.int64)
    n_writes[np.searchsorted(rows_all, o_rows)] = o_counts
    reads = np.isin(rows_all, np.fromiter(by_row, np.int64, len(by_row)))
    cum_writes = np.cumsum(n_writes)
    next_read = np.searchsorted(np.flatnonzero(reads), np.arange(len(rows_all)))  # index into read rows
    read_at = np.append(np.flatnonzero(reads), len(rows_all))

    stall = 0
    finish = 0
    last_row = d.n_rows - 1
    i, n_events = 0, len(rows_all)
    while i < n_events:
        if not reads[i]:
            # A run of write-only cycles stores without consequence while the ofmap SRAM keeps room: above half
            # free (no drain starts), or above empty while a drain runs. Take that run in one step.
            stop = min(int(read_at[next_read[i]]), i + 4096)
            before = cum_writes[i - 1] if i else 0
            taken = cum_writes[i:stop] - before
            cycles = rows_all[i:stop] + stall
            room = np.where(cycles < wb.drain_end, wb.free - taken > 0, wb.free - taken >= wb.active)
            k = int(np.argmin(room)) if not room.all() else stop - i
            if k:
                wb.store(int(taken[k - 1]))
                finish = max(finish, int(cycles[k - 1]))
                i += k
                continue
        r = int(rows_all[i])
        cycle = r + stall
        if r == last_row:  # the last cycle's own stall does not delay it
            finish = max(finish, cycle)
        delay = 0
        for which, ks in enumerate(by_row.get(r, ((), ()))):
            offset = 1
            for k in ks:
                ready = -1 + k * last_prefetch[which]  # prefetches run back to back from the first fill at -1
                late = ready - (cycle + offset)
                offset += 2 * late if late > 0 else late
            delay = max(delay, offset - 1)
        wait = wb.write(cycle, int(n_writes[i])) if n_writes[i] else 0
        finish = max(finish, cycle + wait)
        stall += max(delay, wait)
        i += 1
    if not n_events or rows_all[-1] != last_row:
        finish = max(finish, last_row + stall)
    wb.flush()
    return MemoryTiming(compute_cycles=d.n_rows - 1, stall_cycles=stall, total_cycles=int(finish),
                        dram_reads_ifmap=ev_i.dram_reads, dram_reads_filter=ev_f.dram_reads,
                        dram_writes_ofmap=wb.dram_writes, prefetches_ifmap=len(ev_i.rows),
                        prefetches_filter=len(ev_f.rows))
