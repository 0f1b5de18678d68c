"""Output tables: schemas, rows -> Arrow, the writer, the catalog, storage, run planning."""
