-- AgendaProgress and OperationProgress (popflow/projections/progress.py), maintained by the
-- projection runner. Each row is the POP JSON document plus the columns it is queried by.
-- A projection's checkpoint is written in the same transaction as its rows.

CREATE TABLE popflow.projection_checkpoints (
    projection text PRIMARY KEY,
    position   bigint NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT clock_timestamp()
);

CREATE TABLE popflow.agenda_progress (
    id               text PRIMARY KEY,
    agenda_id        text NOT NULL UNIQUE,
    stream_id        text NOT NULL UNIQUE,
    customer_id      text NOT NULL,
    link_id          text,
    cid              text,
    processing_state text NOT NULL,
    updated_time     bigint NOT NULL,
    doc              jsonb NOT NULL
);
CREATE INDEX agenda_progress_link ON popflow.agenda_progress (link_id) WHERE link_id IS NOT NULL;
CREATE INDEX agenda_progress_customer ON popflow.agenda_progress (customer_id);
CREATE INDEX agenda_progress_cid ON popflow.agenda_progress (cid) WHERE cid IS NOT NULL;

CREATE TABLE popflow.operation_progress (
    id                 text PRIMARY KEY,
    agenda_progress_id text NOT NULL,
    position           int NOT NULL,
    operation          text NOT NULL,
    customer_id        text NOT NULL,
    processing_state   text NOT NULL,
    updated_time       bigint NOT NULL,
    doc                jsonb NOT NULL
);
CREATE INDEX operation_progress_agenda ON popflow.operation_progress (agenda_progress_id, position);
