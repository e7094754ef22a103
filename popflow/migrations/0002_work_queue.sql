-- The work queue (an inline projection of the agenda streams, see
-- popflow/projections/queue.py) and the workers that hold leases on it.

CREATE TABLE popflow.agenda_queue (
    stream_id         text PRIMARY KEY,
    agenda_id         text NOT NULL UNIQUE,
    resource_pool_id  text NOT NULL,
    insight_id        text NOT NULL,
    customer_id       text NOT NULL,
    status            text NOT NULL CHECK (status IN ('ready', 'dispatched', 'running')),
    enqueued_position bigint NOT NULL,
    dispatch          int NOT NULL DEFAULT 0,
    worker_id         text,
    updated_at        timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- Claims scan ready agendas of some insights in queue order.
CREATE INDEX agenda_queue_ready ON popflow.agenda_queue (insight_id, enqueued_position)
    WHERE status = 'ready';
CREATE INDEX agenda_queue_ready_order ON popflow.agenda_queue (enqueued_position)
    WHERE status = 'ready';
-- The reclaimer looks for leases held by dead workers.
CREATE INDEX agenda_queue_leased ON popflow.agenda_queue (worker_id)
    WHERE status <> 'ready';

-- A lease is valid while its worker's heartbeat is fresh (judged by the database clock).
CREATE TABLE popflow.workers (
    worker_id    text PRIMARY KEY,
    host         text NOT NULL,
    pid          int NOT NULL,
    started_at   timestamptz NOT NULL DEFAULT now(),
    heartbeat_at timestamptz NOT NULL DEFAULT now()
);
