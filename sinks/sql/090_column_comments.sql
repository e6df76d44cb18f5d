-- Column comments of the telemetry table, from the Avro schema's field docs (declared
-- once, in schemas/telemetry_reading.avsc): what `describe_table` and system.columns show.
-- Idempotent: a comment is replaced, never added twice.
ALTER TABLE {database}.telemetry {telemetry_column_comments};
