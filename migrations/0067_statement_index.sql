-- A wallet's statement reads its newest movements: the account's entries by journal id (UUIDv7, in the order
-- journals are posted), newest first, from the index, rather than every entry of the account's history. The index
-- replaces the one on (tenant_id, account_id), whose every use it serves, so writes keep one index for it.
create index journal_entry_account_journal_idx on journal_entry (tenant_id, account_id, journal_id);
drop index journal_entry_account_idx;
