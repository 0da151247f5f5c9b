"""aisle: a SQL-first e-commerce recommendation warehouse (dbt on PostgreSQL)."""

__version__ = "0.1.0"
