"""The control's database: the SQLite connection, its transactions and the schema migrations."""
