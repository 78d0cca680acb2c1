"""The record format data_prep writes, defined once in `inference.records` (the one item type every
stage reads); these names are imported from there for callers that address them through data_prep."""

from inference.records import IMAGES_DIR, RECORDS_FILE, Record, read_records, records_path, write_records

__all__ = ["IMAGES_DIR", "RECORDS_FILE", "Record", "read_records", "records_path", "write_records"]
