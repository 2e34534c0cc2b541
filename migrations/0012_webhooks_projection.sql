-- Webhook endpoints become an ordinary projection (`webhooks`, projections/src/webhooks.rs):
-- the append no longer writes their read model, so `projections rebuild` covers it. An endpoint's
-- delivery checkpoint starts at its creation in the log; the projection records where that is,
-- and the dispatcher makes the checkpoint from it on first use.
alter table webhook_endpoint add column created_transaction_id xid8, add column created_position bigint;
update webhook_endpoint w set created_transaction_id = e.transaction_id, created_position = e.position
  from event e where e.aggregate_type = 'WebhookEndpoint' and e.aggregate_id = w.id and e.sequence = 1;
-- Starts at the beginning: creation is an upsert and the rest are updates and deletes, so
-- replaying onto the rows written before this migration ends where they are.
insert into projection_checkpoint (name) values ('webhooks') on conflict do nothing;
