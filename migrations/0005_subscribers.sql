-- Durable checkpoints of the subscribers (webhook endpoints, the NATS publisher, ...): each
-- consumes the public event feed in log order and records how far it has delivered.
create table subscriber_checkpoint (
    name           text primary key,
    transaction_id xid8 not null default '0',
    position       bigint not null default 0,
    seq            int not null default 0,
    updated_at     timestamptz not null default now()
);
