"""Usage records (contract section 11): one per paid request, kept apart from the money."""

from routstr_node.records.model import Counted, Grouping, RecordFilter, UsageGroup, UsageRecord
from routstr_node.records.store import UsageStore

__all__ = ["Counted", "Grouping", "RecordFilter", "UsageGroup", "UsageRecord", "UsageStore"]
