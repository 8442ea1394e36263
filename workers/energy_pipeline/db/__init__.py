"""PostgreSQL access: schema migrations and the ingest write path."""
