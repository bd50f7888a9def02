"""`make bench`: pipeline throughput, end-to-end latency and read latency of Skillquest on
the local stack, next to the raw ceilings of the same broker and database (bench/README.md).
"""
