"""The raw log client over aiokafka; it knows nothing of event types."""

from taskfold.log.reader import LogReader
from taskfold.log.records import ConsumedRecord, Position, RawRecord
from taskfold.log.writer import LogWriter

__all__ = ["ConsumedRecord", "LogReader", "LogWriter", "Position", "RawRecord"]
