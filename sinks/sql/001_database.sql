-- Everything the pipeline stores lives in one database.
CREATE DATABASE IF NOT EXISTS {database};
