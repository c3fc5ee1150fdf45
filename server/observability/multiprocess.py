"""``serve --workers N``: one scrape answers for every worker (prometheus-client multiprocess mode).

How the library does it: when ``PROMETHEUS_MULTIPROC_DIR`` is set before it is imported, every
value of every ``Counter``/``Gauge``/``Histogram`` lives in a per-process memory-mapped file in
that directory, and ``MultiProcessCollector`` merges the files at scrape time (counters and
histograms summed; gauges by the family's ``multiprocess_mode``). The parent process owns the
directory: it creates it empty before forking and removes it after the last worker ends
(``worker_directory``).

What the library leaves to us: figures that are *pulled* at scrape time by a custom collector
(breaker state, pool sizes, process CPU and memory) exist only in the process that holds
them, and a scrape reaches one worker. ``Mirror`` copies each pulled family into file-backed
families of the same name: counters by the increase since the last copy (so the merged value
is the sum over workers, dead ones included, as a counter should be), gauges by value with the
merge mode the family was registered with (``livesum`` for pools, ``livemax`` for breaker
state, ...), histograms like counters (each bucket and the sum by its increase). Every worker
copies on an interval and the answering one right before it renders. Pulled summaries are not
copied: push those.
"""

from __future__ import annotations

import contextlib
import glob
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from typing import Any, Literal

from prometheus_client import Gauge, values
from prometheus_client.metrics_core import Metric
from prometheus_client.mmap_dict import MmapedDict
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample

from server.observability.exposition import Slicer

log = logging.getLogger(__name__)

ENV = "PROMETHEUS_MULTIPROC_DIR"

Merge = Literal[
    "all", "liveall", "min", "livemin", "max", "livemax", "sum", "livesum", "mostrecent",
    "livemostrecent",
]  # fmt: skip
MergeRule = Merge | Mapping[str, Merge]
DEFAULT_MERGE: Merge = "livemostrecent"

# How the process collector's families combine over workers: memory and descriptors add up,
# the oldest start time and the largest limit describe the group.
PROCESS_MERGE: dict[str, Merge] = {
    "process_virtual_memory_bytes": "livesum",
    "process_resident_memory_bytes": "livesum",
    "process_open_fds": "livesum",
    "process_max_fds": "livemax",
    "process_start_time_seconds": "livemin",
}


def enabled() -> bool:
    """Is prometheus-client writing its values to files? (Decided when it was imported.)"""
    return bool(getattr(values.ValueClass, "_multiprocess", False))


def directory() -> str | None:
    return os.environ.get(ENV) if enabled() else None


PREFIX = "infrawatch-metrics-"


@contextlib.contextmanager
def worker_directory() -> Iterator[str]:
    """An empty directory for the workers' files, named in the environment they inherit.

    Used by the parent before it starts the workers; removed (with every file) afterwards, so a
    restart never sums counters of a previous run. Its name holds the parent's pid: a parent
    killed outright (SIGKILL, OOM) cannot remove it, so the next parent removes those whose
    owner is gone (``sweep_stale``).
    """
    sweep_stale()
    path = tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-")
    previous = os.environ.get(ENV)
    os.environ[ENV] = path
    try:
        yield path
    finally:
        if previous is None:
            os.environ.pop(ENV, None)
        else:
            os.environ[ENV] = previous
        shutil.rmtree(path, ignore_errors=True)


def sweep_stale(parent: str | None = None) -> list[str]:
    """Remove the worker directories (ours: same user) whose parent process no longer runs, in
    ``parent`` (the system temp dir by default); returns what it removed. A directory whose pid
    runs, belongs to another user or has no pid in its name is left alone."""
    removed = []
    for path in glob.glob(os.path.join(parent or tempfile.gettempdir(), f"{PREFIX}*")):
        owner = os.path.basename(path)[len(PREFIX) :].split("-", 1)[0]
        try:
            mine = os.stat(path).st_uid == os.getuid()
        except FileNotFoundError:
            continue
        if owner.isdigit() and mine and not _running(int(owner)):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


def worker_exited(pid: int, path: str) -> None:
    """Drop the ``live*`` gauges of a worker that ended: they describe a process that is gone."""
    mark_process_dead(pid, path)  # type: ignore[no-untyped-call]  # untyped upstream


async def merged(path: str, slicer: Slicer) -> list[Metric]:
    """Every worker's families, merged: ``MultiProcessCollector.collect()`` in slices.

    The library reads every file and accumulates every family in one call (13.5 ms on the loop
    for two workers of 2,000 series, ``docs/performance.md``). Here the files are read entry by
    entry as the library reads them, with the loop served between slices, and each family is
    then accumulated by the library's own ``_accumulate_metrics``, one family per call, so the
    merge rules stay its own.
    """
    families: dict[str, Metric] = {}
    keys: dict[str, tuple[str, str, tuple[tuple[str, str], ...], str]] = {}
    for path_ in glob.glob(os.path.join(path, "*.db")):
        parts = os.path.basename(path_).split("_")
        kind = parts[0]
        try:
            entries = MmapedDict.read_all_values_from_file(path_)  # type: ignore[no-untyped-call]
        except FileNotFoundError:
            if kind == "gauge" and parts[1].startswith("live"):
                continue  # a worker that ended: its live gauges were removed meanwhile
            raise
        for key, value, timestamp, _ in entries:
            parsed = keys.get(key)
            if parsed is None:
                metric_name, name, labels, help_text = json.loads(key)
                parsed = keys[key] = (metric_name, name, tuple(sorted(labels.items())), help_text)
            metric_name, name, labels_key, help_text = parsed
            family = families.get(metric_name)
            if family is None:
                family = families[metric_name] = Metric(metric_name, help_text, kind)
            # The library's intermediate form: label tuples (a gauge's with its pid), which
            # _accumulate_metrics folds and turns into dicts.
            labelled: Any = labels_key
            if kind == "gauge":
                family._multiprocess_mode = parts[1]  # type: ignore[attr-defined]
                labelled = (*labels_key, ("pid", parts[2][:-3]))
            family.samples.append(
                Sample(name, labelled, value, timestamp if kind == "gauge" else None)
            )
            if slicer.due():
                await slicer.pause()
    out: list[Metric] = []
    for metric_name, family in families.items():
        accumulated: Any = MultiProcessCollector._accumulate_metrics(  # type: ignore[no-untyped-call]
            {metric_name: family}, True
        )
        out.extend(accumulated)
        if slicer.due():
            await slicer.pause()
    return out


def merge_for(rule: MergeRule, family: str) -> Merge:
    if isinstance(rule, str):
        return rule
    return rule.get(family, DEFAULT_MERGE)


class Mirror:
    """Copies pulled families into file-backed ones (see the module docstring)."""

    def __init__(self) -> None:
        self._gauges: dict[str, tuple[Gauge, tuple[str, ...]]] = {}
        self._values: dict[tuple[str, tuple[tuple[str, str], ...]], Any] = {}
        self._last: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        self._warned: set[str] = set()

    def sync(self, collectors: list[tuple[Collector, MergeRule]]) -> None:
        for collector, rule in collectors:
            try:
                families = list(collector.collect())
            except Exception:
                log.exception("metrics collector %r failed", collector)
                continue
            for family in families:
                if family.type == "counter":
                    self._counter(family.name, family.documentation, family.samples)
                elif family.type == "histogram":
                    self._histogram(family.name, family.documentation, family.samples)
                elif family.type in ("gauge", "unknown", "info", "stateset"):
                    mode = merge_for(rule, family.name)
                    for sample in family.samples:
                        self._gauge(sample.name, family.documentation, mode, sample)
                elif family.name not in self._warned:
                    self._warned.add(family.name)
                    log.warning(
                        "pulled %s family %s is not merged across workers; push it instead",
                        family.type,
                        family.name,
                    )

    def _counter(self, name: str, doc: str, samples: list[Sample]) -> None:
        for sample in samples:
            if sample.name != name + "_total":
                continue  # _created: the merged output has none
            value = self._value("counter", name, sample, doc)
            rise = self._rise(sample)
            if rise > 0:
                value.inc(rise)

    def _histogram(self, name: str, doc: str, samples: list[Sample]) -> None:
        """The file-backed values hold each bucket's own count (not the cumulative ``le``
        figure) and the sum, as prometheus-client's ``Histogram`` writes them."""
        below: dict[tuple[tuple[str, str], ...], float] = {}  # per child: previous bucket's rise
        for sample in samples:
            if sample.name == name + "_bucket":
                child = tuple(sorted((k, v) for k, v in sample.labels.items() if k != "le"))
                rise = self._rise(sample)
                own = rise - below.get(child, 0.0)
                below[child] = rise
            elif sample.name == name + "_sum":
                own = self._rise(sample)
            else:
                continue  # _count is the merge's sum of the buckets; _created has no merge
            value = self._value("histogram", name, sample, doc)  # every bucket, empty or not
            if own > 0:
                value.inc(own)

    def _rise(self, sample: Sample) -> float:
        key = (sample.name, tuple(sorted(sample.labels.items())))
        previous = self._last.get(key, 0.0)
        self._last[key] = sample.value
        # A pulled counter that went down was reset at its source: all of it is new.
        return sample.value - previous if sample.value >= previous else sample.value

    def _value(self, kind: str, family: str, sample: Sample, doc: str) -> Any:
        """The file-backed value of one sample, as prometheus-client's own family of ``kind``
        would write it."""
        labels = tuple(sorted(sample.labels.items()))
        value = self._values.get((sample.name, labels))
        if value is None:
            names = tuple(k for k, _ in labels)
            values_ = tuple(v for _, v in labels)
            value = values.ValueClass(kind, family, sample.name, names, values_, doc)
            self._values[(sample.name, labels)] = value
        return value

    def _gauge(self, name: str, doc: str, mode: Merge, sample: Sample) -> None:
        labels = sample.labels
        labelnames = tuple(sorted(labels))
        entry = self._gauges.get(name)
        if entry is None:
            gauge = Gauge(name, doc, labelnames, registry=None, multiprocess_mode=mode)
            entry = (gauge, labelnames)
            self._gauges[name] = entry
        gauge, known = entry
        if labelnames != known:
            return
        (gauge.labels(*(labels[k] for k in known)) if known else gauge).set(sample.value)
