"""The domain core: agendas, validation, references, DAG readiness, decisions and execution."""
