"""`make bench`: throughput and latency figures, measured against a raw aiokafka baseline."""
