-- A refund is found by its reference at the provider (`re_…`): the refund webhook books one made in Stripe's
-- dashboard once, and a refund retried after its first try was undone finds the one the webhook booked since.
create unique index refund_provider_ref_key on refund (tenant_id, provider_ref);
