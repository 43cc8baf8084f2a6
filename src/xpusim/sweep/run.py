"""Running a study: points batched into tasks on dask.distributed (a local cluster by default, a real one by
address, or the caller's client) or in a plain loop, results streamed back and written to one Parquet file
chunk by chunk, resumable by content key, with Pareto fronts.

Output: one Parquet file, one row per point — the inputs, the kind's headline outputs, ``error`` (the message of a
point that failed, else null) and ``key`` (the point's content key) — plus ``pareto`` when objectives are given.
Parquet files cannot be appended to, so each chunk rewrites the whole file atomically (a temporary file renamed
into place, `xpusim.files.write_atomic`): a crash loses at most the rows since the last chunk, never the file.
The rewrite is throttled to at most ~10% of the wall time (a chunk waits at least 10× the last write's duration).
"""

from __future__ import annotations

import contextlib
import math
import os
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import xpusim
from xpusim.engines.pareto import pareto_mask, parse_objectives
from xpusim.errors import UserError
from xpusim.files import PLOT_SUFFIXES, check_output, write_atomic
from xpusim.sweep.points import MAXIMIZE, run_batch
from xpusim.sweep.study import Point, Study, load_study

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

CONNECT_TIMEOUT_S = 10.0
"""How long to try to reach a scheduler given by address before a `UserError`."""
CHUNK_ROWS = 1000
"""New rows that make a chunk (the output is rewritten); see also `FLUSH_SECONDS`."""
FLUSH_SECONDS = 10.0
"""A chunk is written at least this often while rows arrive (so a crash loses at most this much work)."""
WRITE_SHARE = 0.1
"""At most this share of the wall time goes to rewriting the output."""
TASKS_PER_SLOT = 4
"""Aim for at least this many tasks per worker thread, so a slow or lost worker does not hold up the end."""
OUT_SUFFIXES = (".parquet", ".pq")


# --------------------------------------------------------------------------------------------------- progress
@dataclass(frozen=True, kw_only=True)
class SweepProgress:
    """What the progress callback receives: after the start, after each finished task and at the end."""

    done: int
    """Points with a row: computed in this run plus reused from the output (``resume``)."""
    total: int
    computed: int
    reused: int
    errors: int
    """Points of this run that failed (each is a row with its ``error``)."""
    elapsed_s: float
    points_per_s: float
    """Points computed per second of this run's wall time."""
    eta_s: float | None
    """Seconds left at the current rate (None before the first task ends)."""
    workers: int
    """Worker threads of the cluster (0: the serial loop)."""
    dashboard: str | None = None
    """The dask dashboard's address, when the cluster has one."""

    def line(self) -> str:
        pct = 100 * self.done / self.total if self.total else 100.0
        eta = "—" if self.eta_s is None else f"{self.eta_s:,.0f} s"
        return (f"{self.done:,}/{self.total:,} points ({pct:.0f}%) · {self.points_per_s:,.1f} points/s · ETA {eta}"
                + (f" · {self.errors:,} failed" if self.errors else ""))

    def __str__(self) -> str:
        return self.line()


ProgressFn = Callable[[SweepProgress], None]


class _Tracker:
    def __init__(self, total: int, reused: int, callback: ProgressFn | None, workers: int,
                 dashboard: str | None) -> None:
        self.total, self.reused, self.callback = total, reused, callback
        self.workers, self.dashboard = workers, dashboard
        self.computed = self.errors = 0
        self.task_seconds = 0.0
        """Seconds the tasks ran on their workers, all together (for the scheduling overhead)."""
        self.start = time.monotonic()

    def add(self, computed: int, errors: int) -> None:
        self.computed += computed
        self.errors += errors

    def snapshot(self) -> SweepProgress:
        elapsed = time.monotonic() - self.start
        rate = self.computed / elapsed if elapsed > 0 else 0.0
        left = self.total - self.reused - self.computed
        return SweepProgress(done=self.reused + self.computed, total=self.total, computed=self.computed,
                             reused=self.reused, errors=self.errors, elapsed_s=elapsed, points_per_s=rate,
                             eta_s=left / rate if rate > 0 else (0.0 if left == 0 else None), workers=self.workers,
                             dashboard=self.dashboard)

    def report(self) -> None:
        if self.callback is not None:
            self.callback(self.snapshot())


# ----------------------------------------------------------------------------------------------------- schema
def _arrow_types() -> dict[str, pa.DataType]:
    import pyarrow as pa

    return {"float64": pa.float64(), "int64": pa.int64(), "bool": pa.bool_(), "string": pa.string()}


def input_types(st: Study) -> dict[str, str]:
    """The Arrow type of each input column: bool, int64, float64 (ints and floats mixed) or string (strings, or
    values of mixed kinds, written as text)."""
    out = {}
    for k in st.order:
        values = [v for v in (st.axes[k] if k in st.axes else (st.fixed[k],)) if v is not None]
        if values and all(isinstance(v, bool) for v in values):
            out[k] = "bool"
        elif values and all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            out[k] = "int64"
        elif values and all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
            out[k] = "float64"
        else:
            out[k] = "string"
    return out


class _Schema:
    """Rows (dicts) → an Arrow table with stable column types: inputs, outputs, extra outputs, error, key."""

    def __init__(self, st: Study) -> None:
        self.inputs = input_types(st)
        self.outputs = dict(st.spec.outputs)
        self.reserved = {*self.inputs, *self.outputs, "error", "key", "pareto"}

    def row(self, key: str, inputs: Mapping[str, Any], outputs: Mapping[str, Any] | None,
            error: str | None) -> dict[str, Any]:
        row = {k: (str(v) if self.inputs[k] == "string" and v is not None else v) for k, v in inputs.items()}
        for k, v in (outputs or {}).items():
            if k not in self.inputs:  # an output never overwrites an input column
                row[k] = v
        row["error"], row["key"] = error, key
        return row

    def table(self, rows: Sequence[Mapping[str, Any]]) -> pa.Table:
        import pyarrow as pa

        types = _arrow_types()
        extra = sorted({k for r in rows for k in r} - self.reserved)
        columns: dict[str, pa.Array] = {}
        for name, kind in [*self.inputs.items(), *self.outputs.items(), *((k, "float64") for k in extra),
                           ("error", "string"), ("key", "string")]:
            values = [r.get(name) for r in rows]
            if kind == "int64":
                if any(isinstance(v, float) and not v.is_integer() for v in values):
                    kind = "float64"
                else:
                    values = [None if v is None else int(v) for v in values]
            elif kind == "float64":
                values = [None if v is None else float(v) for v in values]
            columns[name] = pa.array(values, type=types[kind])
        return pa.table(columns)


# ----------------------------------------------------------------------------------------------------- output
def _read_existing(path: Path, drop_pareto: bool = True) -> pa.Table:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException) as exc:
        raise UserError(f"out {str(path)!r}: cannot read it as Parquet to resume: {exc}") from None
    if "key" not in table.column_names:
        raise UserError(f"out {str(path)!r} is not a sweep output (no 'key' column); give another path or force")
    if drop_pareto and "pareto" in table.column_names:  # recomputed at the end of every run
        table = table.drop_columns(["pareto"])
    first: dict[str, int] = {}
    for i, k in enumerate(table.column("key").to_pylist()):
        first.setdefault(k, i)
    return table if len(first) == table.num_rows else table.take(sorted(first.values()))


def _concat(tables: Sequence[pa.Table]) -> pa.Table:
    import pyarrow as pa

    try:
        return pa.concat_tables(tables, promote_options="permissive")
    except pa.ArrowException as exc:
        raise UserError(f"the rows of this study do not match the columns already in the output ({exc}); write to "
                        "a new path") from None


class _Output:
    """Rows as they arrive, deduplicated by key, written chunk by chunk to ``path`` (if any)."""

    def __init__(self, path: Path | None, schema: _Schema, existing: pa.Table | None, chunk_rows: int) -> None:
        self.path, self.schema, self.chunk_rows = path, schema, chunk_rows
        self.tables: list[pa.Table] = [existing] if existing is not None else []
        self.keys: set[str] = set(existing.column("key").to_pylist()) if existing is not None else set()
        self.buffer: list[dict[str, Any]] = []
        self.last_flush = time.monotonic()
        self.write_s = 0.0

    def add(self, rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """Keep the rows whose key is new; those rows."""
        new = [r for r in rows if r["key"] not in self.keys]
        self.keys.update(r["key"] for r in new)
        self.buffer.extend(new)
        now = time.monotonic()
        since = now - self.last_flush
        if (len(self.buffer) >= self.chunk_rows or since >= FLUSH_SECONDS) and since >= self.write_s / WRITE_SHARE:
            self.flush()
        return new

    def flush(self) -> None:
        if self.buffer:
            self.tables.append(self.schema.table(self.buffer))
            self.buffer = []
            if self.path is not None:
                self.write(self.table())
        self.last_flush = time.monotonic()

    def table(self) -> pa.Table:
        if not self.tables:
            self.tables = [self.schema.table([])]
        if len(self.tables) > 1:
            self.tables = [_concat(self.tables)]
        return self.tables[0]

    def write(self, table: pa.Table) -> None:
        import pyarrow.parquet as pq

        assert self.path is not None
        start = time.monotonic()
        write_atomic(self.path, lambda tmp: pq.write_table(table, tmp))
        self.write_s = time.monotonic() - start


def _check_out(out: str | Path | None, resume: bool, force: bool) -> Path | None:
    if resume and force:
        raise UserError("give resume (continue the output) or force (overwrite it), not both")
    if out is None:
        if resume:
            raise UserError("resume needs out: the Parquet file to continue")
        return None
    path = check_output(out, "out", OUT_SUFFIXES)
    assert path is not None
    if path.exists() and not (resume or force):
        raise UserError(f"out {str(path)!r} exists; resume it (resume=True, --resume) or overwrite it "
                        "(force=True, --force)")
    return path


# ----------------------------------------------------------------------------------------------------- pareto
def objectives_for(pareto: str | Sequence[str] | None, st: Study) -> list[tuple[str, str]] | None:
    """Pareto objectives as (column, min/max), checked against the study's numeric columns (bare names of
    throughput-like outputs are maximized: `xpusim.sweep.points.MAXIMIZE`)."""
    if pareto is None:
        return None
    objectives = parse_objectives(pareto, dict.fromkeys(MAXIMIZE, "max"))
    numeric = [k for k, t in [*st.spec.outputs, *input_types(st).items()] if t in ("float64", "int64")]
    for key, _ in objectives:
        per_system = st.kind == "compress" and key.endswith(("_latency_s", "_energy_j", "_cycles"))
        if key not in numeric and not per_system:
            raise UserError(f"pareto objective {key!r} is not a numeric column of a {st.kind} sweep; numeric "
                            f"columns: {', '.join(numeric)}")
    return objectives


def pareto_column(df: pd.DataFrame, objectives: Sequence[tuple[str, str]]) -> list[bool]:
    """For each row, whether it is on the Pareto front of ``objectives``. Failed points and designs that do not
    fit (``fits`` false) are never on it."""
    missing = [k for k, _ in objectives if k not in df.columns]
    if missing:
        raise UserError(f"pareto objective {', '.join(missing)}: no such column; columns: {', '.join(df.columns)}")
    ok = df["error"].isna() if "error" in df.columns else None
    if "fits" in df.columns:
        fits = df["fits"].astype("boolean").fillna(True).astype(bool)
        ok = fits if ok is None else ok & fits
    values = {k: df[k].astype("float64").tolist() for k, _ in objectives}
    keep = [True] * len(df) if ok is None else ok.tolist()
    points = [{k: values[k][i] for k, _ in objectives} if keep[i] else {} for i in range(len(df))]
    return pareto_mask(points, objectives)


# ----------------------------------------------------------------------------------------------------- cluster
@dataclass(frozen=True)
class _Cluster:
    client: Any
    """A dask ``Client``, or None for the serial loop."""
    slots: int
    """Worker threads (0 for the serial loop)."""
    dashboard: str | None


def _dashboard(client: Any) -> str | None:
    try:
        if "dashboard" not in client.scheduler_info().get("services", {}):
            return None
        return str(client.dashboard_link)
    except Exception:  # no dashboard is no reason to fail a sweep
        return None


def _slots(client: Any) -> int:
    return max(1, sum(client.nthreads().values()))


@contextlib.contextmanager
def _connect(client: Any, workers: int | None, scheduler: str | Path | None,
             timeout_s: float) -> Iterator[_Cluster]:
    if client is False or workers == 0:
        yield _Cluster(None, 0, None)
        return
    if client is not None and client is not True:
        if scheduler is not None or workers is not None:
            raise UserError("give a client, or a scheduler / workers to start one, not both")
        yield _Cluster(client, _slots(client), _dashboard(client))  # the caller's: left running
        return
    from distributed import Client, LocalCluster

    address = scheduler if scheduler is not None else os.environ.get("DASK_SCHEDULER_ADDRESS") or None
    if address is not None:
        if workers is not None:
            raise UserError("workers is the size of the local cluster; a scheduler brings its own workers")
        text = str(address)
        as_file = isinstance(address, Path) or text.endswith(".json")
        if as_file and not Path(text).is_file():
            raise UserError(f"scheduler file {text!r} does not exist")
        try:
            c = (Client(scheduler_file=text, timeout=timeout_s) if as_file
                 else Client(text, timeout=timeout_s))
        except (OSError, TimeoutError, ValueError) as exc:
            raise UserError(f"scheduler {text!r}: cannot connect within {timeout_s:g} s ({type(exc).__name__}: "
                            f"{exc}); is 'dask scheduler' running there and reachable?") from None
        try:
            yield _Cluster(c, _slots(c), _dashboard(c))
        finally:
            c.close()
        return
    n = (os.cpu_count() or 1) if workers is None else workers
    if not isinstance(n, int) or isinstance(n, bool) or n < 0:
        raise UserError(f"workers {workers!r}: expected a number of local worker processes (0: no cluster)")
    # ":0": a free port. Without bokeh installed the dashboard's page says how to install it.
    cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=":0")
    try:
        c = Client(cluster)
        try:
            yield _Cluster(c, n, _dashboard(c))
        finally:
            c.close()
    finally:
        cluster.close()


def _execute(st: Study, batches: list[list[tuple[str, dict[str, Any]]]], cluster: _Cluster,
             on_result: Callable[[dict[str, Any]], None]) -> None:
    if cluster.client is None:
        for b in batches:
            on_result(run_batch(st.kind, b, limit_threads=False))
        return
    from distributed import as_completed

    token = uuid.uuid4().hex[:12]
    futures = cluster.client.map(run_batch, [st.kind] * len(batches), batches, pure=False,
                                 key=[f"xpusim-sweep-{st.kind}-{token}-{i}" for i in range(len(batches))])
    try:
        for fut in as_completed(futures, loop=cluster.client.loop):  # this client's loop, not the default's
            try:
                result = fut.result()
            except Exception as exc:
                if type(exc).__name__ == "KilledWorker":
                    raise UserError(f"a sweep task took down every worker it ran on ({exc}): out of memory? see the "
                                    "workers' logs") from exc
                raise UserError(f"a sweep task failed on the cluster ({type(exc).__name__}: {exc}); every worker "
                                f"needs xpusim {xpusim.__version__} and its dependencies installed") from exc
            fut.release()
            on_result(result)
    finally:
        cluster.client.cancel(futures)


def _batch_size(default: int, todo: int, slots: int) -> int:
    if slots <= 0:
        return default
    return max(1, min(default, math.ceil(todo / (TASKS_PER_SLOT * slots))))


def _positive_int(name: str, value: int | None) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise UserError(f"{name} {value!r}: expected a positive integer")


# ------------------------------------------------------------------------------------------------------ sweep
def sweep(study: str | Path | Mapping[str, Any], *, out: str | Path | None = None, client: Any = None,
          workers: int | None = None, scheduler: str | Path | None = None, resume: bool = False,
          force: bool = False, pareto: str | Sequence[str] | None = None, progress: ProgressFn | None = None,
          batch_size: int | None = None, chunk_rows: int | None = None,
          connect_timeout_s: float = CONNECT_TIMEOUT_S, plot: str | Path | None = None) -> pd.DataFrame:
    """Run every point of ``study`` and return one row per point (a pandas DataFrame, in grid order).

    ``study``: a ``.yaml`` path, a YAML string or a dict (`xpusim.sweep.study`). Where it runs: ``client`` (any
    ``dask.distributed.Client``, left running), else ``scheduler`` (an address such as ``tcp://host:8786`` or a
    scheduler ``.json`` file; default ``$DASK_SCHEDULER_ADDRESS``; unreachable within ``connect_timeout_s`` → a
    `UserError`), else a local cluster of ``workers`` processes (default: one per core); ``client=False`` or
    ``workers=0`` runs a plain loop in this process. ``batch_size``: points per task (default per kind, fewer
    when there are few points per worker thread).

    ``out``: a ``.parquet`` file written chunk by chunk (every ``chunk_rows`` new rows or `FLUSH_SECONDS`); an
    existing one is refused unless ``resume`` (compute only the points whose content key it lacks, keep its rows)
    or ``force`` (overwrite it). ``pareto``: objectives such as ``"latency_s,energy_j"`` or
    ``["latency_s", "max:tops"]`` (default: the study's ``pareto:``): adds the bool column ``pareto``.
    ``plot``: also draw the front on the first two objectives (`plot_pareto`; ``.png``, ``.svg``, ``.pdf``).
    ``progress`` is called with a `SweepProgress` at the start, after each task and at the end.

    The DataFrame's ``attrs`` hold ``computed`` (points run now), ``reused`` (found in ``out``), ``errors``,
    ``seconds`` (all of it), ``run_seconds`` (from the first task submitted to the last row written),
    ``task_seconds`` (the tasks' own time on their workers, summed: 1 − task_seconds / (workers · run_seconds) is
    the share lost to scheduling, transfers, writing and idle workers), ``workers`` (worker threads, 0: serial)
    and ``dashboard``.
    """
    st = load_study(study)
    objectives = objectives_for(pareto if pareto is not None else st.pareto, st)
    if plot is not None:
        if objectives is None:
            raise UserError("plot needs objectives: give pareto (--pareto a,b) or pareto: in the study")
        check_output(plot, "plot", PLOT_SUFFIXES)  # before any work
    for name, v in (("batch_size", batch_size), ("chunk_rows", chunk_rows)):
        _positive_int(name, v)
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 0):
        raise UserError(f"workers {workers!r}: expected a number of local worker processes (0: no cluster)")
    if not (isinstance(connect_timeout_s, int | float) and connect_timeout_s > 0):
        raise UserError(f"connect_timeout_s {connect_timeout_s!r}: expected a positive number of seconds")
    path = _check_out(out, resume, force)
    points: list[Point] = st.points()
    existing = _read_existing(path) if path is not None and resume and path.exists() else None
    schema = _Schema(st)
    output = _Output(path, schema, existing, chunk_rows or CHUNK_ROWS)
    todo = [p for p in points if p.key not in output.keys]
    inputs_by_key = {p.key: p.inputs for p in todo}
    start = time.monotonic()
    nothing_to_do = not todo  # everything is in the output already: no cluster to start
    with _connect(False if nothing_to_do else client, workers, scheduler, float(connect_timeout_s)) as cluster:
        size = batch_size or _batch_size(st.batch_size(), len(todo), cluster.slots)
        batches = [[(p.key, p.inputs) for p in todo[i:i + size]] for i in range(0, len(todo), size)]
        tracker = _Tracker(len(points), len(points) - len(todo), progress, cluster.slots, cluster.dashboard)

        def on_result(result: dict[str, Any]) -> None:
            if result["version"] != xpusim.__version__:
                raise UserError(f"a worker runs xpusim {result['version']}, this process {xpusim.__version__}: "
                                "install the same xpusim on every worker")
            rows = [schema.row(key, inputs_by_key[key], outputs, error) for key, outputs, error in result["rows"]]
            added = output.add(rows)
            tracker.add(len(added), sum(r["error"] is not None for r in added))
            tracker.task_seconds += result["seconds"]
            tracker.report()

        tracker.report()
        try:
            _execute(st, batches, cluster, on_result)
        finally:
            output.flush()  # an interrupted run keeps every row computed so far
        run_seconds = time.monotonic() - tracker.start
    table = _in_grid_order(output.table(), [p.key for p in points])
    df = _frame(table)
    if objectives is not None:
        import pyarrow as pa

        mask = pareto_column(df, objectives)
        df["pareto"] = mask
        table = table.append_column("pareto", pa.array(mask, type=pa.bool_()))
    if path is not None:
        output.write(table)  # the final file: grid order, with the pareto column when asked
    df.attrs.update(computed=tracker.computed, reused=tracker.reused, errors=tracker.errors,
                    seconds=time.monotonic() - start, run_seconds=run_seconds, task_seconds=tracker.task_seconds,
                    workers=cluster.slots, dashboard=cluster.dashboard)
    if plot is not None:
        from xpusim.sweep.plot import plot_pareto

        plot_pareto(df, [f"{d}:{k}" for k, d in objectives or ()], plot)
    return df


def summary(df: pd.DataFrame) -> str:
    """One line on a sweep's result: points, computed (and how fast), reused, failed, the dashboard it ran on."""
    a = df.attrs
    return (f"{len(df):,} points: {a.get('computed', 0):,} computed in {a.get('seconds', 0.0):.1f} s, "
            f"{a.get('reused', 0):,} reused, {a.get('errors', 0):,} failed"
            + (f" · dashboard was {a['dashboard']}" if a.get("dashboard") else ""))


def _in_grid_order(table: pa.Table, keys: Sequence[str]) -> pa.Table:
    rank = {k: i for i, k in enumerate(keys)}
    have = table.column("key").to_pylist()
    order = sorted(range(len(have)), key=lambda i: (rank.get(have[i], len(rank)), i))
    return table.take(order)


def _frame(table: pa.Table) -> pd.DataFrame:
    import pandas as pd
    import pyarrow as pa

    mapping = {pa.int64(): pd.Int64Dtype(), pa.bool_(): pd.BooleanDtype()}
    return table.to_pandas(types_mapper=mapping.get)


def read_output(path: str | Path) -> pd.DataFrame:
    """A sweep's Parquet output as the DataFrame `sweep` returns (each key once)."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"sweep output {str(p)!r} does not exist")
    return _frame(_read_existing(p, drop_pareto=False))
