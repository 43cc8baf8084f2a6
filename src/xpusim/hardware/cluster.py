"""Clusters as data: nodes of accelerators joined by a scale-up fabric, nodes joined by a scale-out network.

One YAML file per cluster in ``hardware/clusters/``; it names a chip file of the catalog (or a chip file path)
and states every link bandwidth **one way, per GPU** (the field names say so), with its source. The
``efficiency`` block is the achieved fraction of the chip's peak and of each link: the parallel simulator uses
one such set for every plan on that cluster, never a per-run fudge.
"""

from __future__ import annotations

import functools
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, PositiveInt, ValidationError, model_validator

from xpusim.errors import UserError
from xpusim.hardware.chip import Chip, ChipError, Efficiency, _format_validation, load_chip, read_user_yaml
from xpusim.names import suggest
from xpusim.units import GIGA


class ClusterError(UserError):
    """A cluster name or file that cannot be used; the message names the field, the value and what is allowed."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Fabric(_Strict):
    """One level of the network: the α-β model's per-message latency and per-GPU one-way bandwidth."""

    name: str
    bandwidth_gb_per_s_one_way_per_gpu: PositiveFloat = Field(
        description="What one GPU can send (and, at the same time, receive) per second, in 10^9 B/s.")
    latency_us: float = Field(ge=0, description="α: per-step latency of a collective or a point-to-point send.")
    efficiency: float = Field(1.0, gt=0, le=1, description="Achieved fraction of the bandwidth (NCCL bus bandwidth "
                                                             "over link bandwidth).")
    source: str

    @property
    def bandwidth_bytes_per_s(self) -> float:
        return self.bandwidth_gb_per_s_one_way_per_gpu * GIGA * self.efficiency

    @property
    def latency_s(self) -> float:
        return self.latency_us * 1e-6


def all_reduce_s(nbytes: float, n: int, fabric: Fabric) -> float:
    """Ring all-reduce: 2(n − 1)α + 2(n − 1)/n · S/β."""
    if n <= 1 or nbytes <= 0:
        return 0.0
    return 2 * (n - 1) * fabric.latency_s + 2 * (n - 1) / n * nbytes / fabric.bandwidth_bytes_per_s


def all_gather_s(nbytes: float, n: int, fabric: Fabric) -> float:
    """Ring all-gather or reduce-scatter of a ``nbytes`` result: (n − 1)α + (n − 1)/n · S/β."""
    if n <= 1 or nbytes <= 0:
        return 0.0
    return (n - 1) * fabric.latency_s + (n - 1) / n * nbytes / fabric.bandwidth_bytes_per_s


def all_to_all_s(nbytes: float, n: int, fabric: Fabric) -> float:
    """All-to-all of ``nbytes`` per rank among ``n`` (each keeps 1/n, sends the rest in n − 1 messages):
    (n − 1)α + (n − 1)/n · S/β."""
    if n <= 1 or nbytes <= 0:
        return 0.0
    return (n - 1) * fabric.latency_s + (n - 1) / n * nbytes / fabric.bandwidth_bytes_per_s


class GroupLinks(_Strict):
    """Where a group of ``n`` ranks sits: ``per_node`` of them on each node (all ``n`` when the group fits in one),
    joined by ``intra`` inside a node and ``inter`` across nodes."""

    n: PositiveInt
    per_node: PositiveInt
    intra: Fabric
    inter: Fabric

    @property
    def nodes(self) -> int:
        return max(1, self.n // self.per_node)


def hierarchical_all_to_all_s(nbytes: float, links: GroupLinks, remote_bytes: float | None = None) -> float:
    """All-to-all of ``nbytes`` per rank (1/n to each rank): the share for the per_node − 1 peers in the node goes
    over ``intra``, the (n − per_node)/n share for the ranks on other nodes over ``inter`` — or ``remote_bytes``
    when the sender deduplicates what crosses nodes — at the same time (separate links), one α per peer on each."""
    n, g = links.n, min(links.per_node, links.n)
    if n <= 1 or nbytes <= 0:
        return 0.0
    local = (g - 1) * links.intra.latency_s + (g - 1) / n * nbytes / links.intra.bandwidth_bytes_per_s
    if g == n:
        return local
    remote = (n - g) / n * nbytes if remote_bytes is None else remote_bytes
    return max(local, (n - g) * links.inter.latency_s + remote / links.inter.bandwidth_bytes_per_s)


def group_ring_s(nbytes: float, links: GroupLinks, *, passes: int = 1) -> float:
    """A ring collective over ``links``: ``passes`` = 1 all-gather or reduce-scatter of a ``nbytes`` result, 2
    all-reduce. Each rank sends passes·(n − 1)/n·S. Inside one node all of it goes over ``intra``. Across nodes NCCL
    runs one ring per channel, each entering and leaving every node through one NIC, with a channel per NIC; a rank
    is the node's exit on 1 of its node's per_node channels: 1/per_node of what it sends goes over its own
    ``inter`` link, the rest over ``intra``, at the same time — the node's per_node NICs share the traffic, which a
    flat ring at one link's bandwidth would not. One α per step at the slower link's."""
    n, g = links.n, min(links.per_node, links.n)
    if n <= 1 or nbytes <= 0:
        return 0.0
    if g == n:
        return (all_reduce_s if passes == 2 else all_gather_s)(nbytes, n, links.intra)
    sent = passes * (n - 1) / n * nbytes
    return passes * (n - 1) * links.inter.latency_s + max(sent / g / links.inter.bandwidth_bytes_per_s,
                                                            sent * (g - 1) / g / links.intra.bandwidth_bytes_per_s)


def p2p_s(nbytes: float, fabric: Fabric) -> float:
    """One point-to-point send: α + S/β."""
    return fabric.latency_s + nbytes / fabric.bandwidth_bytes_per_s


class Cluster(_Strict):
    """A homogeneous cluster: ``gpus_per_node`` chips per node on ``intra_node``, nodes on ``inter_node``."""

    @classmethod
    def from_yaml(cls, path: str | Path) -> Cluster:
        """A cluster file (``.yaml``/``.yml``/``.json``) or preset name, validated; `ClusterError` names the field."""
        return load_cluster(path)

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9.\-]*$")
    title: str
    chip: str = Field(description="Catalog name or path of the chip file.")
    gpus_per_node: PositiveInt
    max_gpus: PositiveInt | None = Field(None, description="Largest installation of this kind, if bounded.")
    intra_node: Fabric
    inter_node: Fabric
    efficiency: Efficiency = Field(description="Compute efficiency applied to the chip for training kernels.")
    notes: str | None = None

    @model_validator(mode="after")
    def _check(self) -> Cluster:
        if self.max_gpus is not None and self.max_gpus < self.gpus_per_node:
            raise ValueError(f"max_gpus={self.max_gpus} is smaller than gpus_per_node={self.gpus_per_node}")
        return self

    def load_chip(self) -> Chip:
        """The chip with this cluster's efficiency set (training kernels on this system)."""
        chip = load_chip(self.chip)
        return chip.model_copy(update={"efficiency": self.efficiency})

    def group(self, n: int, span_gpus: int) -> GroupLinks:
        """The links of ``n`` ranks spread evenly over ``span_gpus`` consecutive ranks."""
        per_node = n if span_gpus <= self.gpus_per_node else max(1, n * self.gpus_per_node // span_gpus)
        return GroupLinks(n=n, per_node=per_node, intra=self.intra_node, inter=self.inter_node)

    def fabric(self, span_gpus: int) -> Fabric:
        """The slowest fabric a group of ranks crosses when it spans ``span_gpus`` consecutive ranks."""
        return self.intra_node if span_gpus <= self.gpus_per_node else self.inter_node


def _cluster_dir() -> Any:
    return resources.files("xpusim.hardware") / "clusters"


@functools.cache
def cluster_names() -> tuple[str, ...]:
    return tuple(sorted(e.name.removesuffix(".yaml") for e in _cluster_dir().iterdir() if e.name.endswith(".yaml")))


def parse_cluster(data: Any, origin: str) -> Cluster:
    if not isinstance(data, dict):
        raise ClusterError(f"cluster file {origin}: expected a mapping of fields, got {type(data).__name__}")
    try:
        cluster = Cluster.model_validate(data)
    except ValidationError as exc:
        raise ClusterError(_format_validation(origin, exc).replace("chip file", "cluster file", 1)) from None
    try:
        cluster.load_chip()
    except ChipError as exc:
        raise ClusterError(f"cluster file {origin}: chip: {exc}") from None
    return cluster


@functools.cache
def _load_builtin(name: str) -> Cluster:
    return parse_cluster(yaml.safe_load((_cluster_dir() / f"{name}.yaml").read_text()), f"{name}.yaml")


def load_cluster(spec: str | Path | Cluster) -> Cluster:
    """A preset name (``dgx-a100``) or the path of a cluster file (``.yaml``/``.yml``/``.json``); a `Cluster` is
    returned as is."""
    if isinstance(spec, Cluster):
        return spec
    text = str(spec)
    if text in cluster_names():
        return _load_builtin(text)
    data = read_user_yaml(text, "cluster", ClusterError)
    if data is not None or Path(text).suffix.lower() in (".yaml", ".yml", ".json"):
        return parse_cluster(data, text)
    close = suggest(text, cluster_names())
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise ClusterError(f"unknown cluster {text!r}.{hint} Presets: {', '.join(cluster_names())}; "
                       "or give a cluster .yaml file.")
