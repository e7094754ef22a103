INSERT INTO popflow_bench_rows (stream_id, version, type, data)
SELECT 'agenda-bench', v, 'operation.succeeded', '{"operation": "op-1", "attempt": 1, "output": {}}'
FROM generate_series(1, 100) AS v;
