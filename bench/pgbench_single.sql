INSERT INTO popflow_bench_rows (stream_id, version, type, data)
VALUES ('agenda-bench', 1, 'operation.succeeded', '{"operation": "op-1", "attempt": 1, "output": {}}');
