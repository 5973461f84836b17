"""Database storage: schema, migrations, ids, record load/export (see README.md)."""
