"""The heavy stages on Apache Spark (`run.engine = "spark"`): ingest, sessionize, graph, walks
and the session corpus, writing the same artifacts as the local engine, equal for the same seed.

Modules mirror the local stage modules (`recembed.spark.sessions` <-> `recembed.sessions`, ...);
`session` builds the SparkSession, `io` moves tables between Spark and the run directory.
Importing this package imports nothing; each module imports pyspark, so the local engine never
does (pip install "recembed[spark]").
"""
