"""Run records: the versioned schema, atomic storage, and loading."""

from kdlora.records.schema import SCHEMA_VERSION, Efficiency, RunRecord, RunStatus
from kdlora.records.store import atomic_write_text, iter_records, read_record, record_path, write_record

__all__ = [
    "SCHEMA_VERSION", "Efficiency", "RunRecord", "RunStatus",
    "atomic_write_text", "iter_records", "read_record", "record_path", "write_record",
]
