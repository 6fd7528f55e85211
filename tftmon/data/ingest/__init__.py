"""Ingest's API: real telemetry (files, or Prometheus through `prometheus.query_prometheus`) into a contract dataset."""

from tftmon.data.ingest.files import IngestError, Samples, read_files
from tftmon.data.ingest.mapping import Mapping, MappingError, load_mapping
from tftmon.data.ingest.pipeline import ingest_files, ingest_samples, summary

__all__ = [
    "IngestError",
    "Mapping",
    "MappingError",
    "Samples",
    "ingest_files",
    "ingest_samples",
    "load_mapping",
    "read_files",
    "summary",
]
