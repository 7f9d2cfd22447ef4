//! CSV exports for a period (issue 12's analytics): sessions, payments and ledger entries, RFC 4180 with a header
//! line, times in RFC 3339 UTC, amounts in minor units. Text a spreadsheet would take for a formula is prefixed with
//! `'`. Sessions and payments are confined to the member's venues; ledger entries (patron wallets belong to no
//! venue) only to members who see every venue.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::db::TenantTx;
use crate::error::{Error, Result};
use crate::model::Actor;

/// The most rows one export holds; a longer period must be split.
pub const MAX_ROWS: i64 = 50_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, async_graphql::Enum)]
pub enum Export {
    /// Sessions started in the period.
    Sessions,
    /// Payments created in the period.
    Payments,
    /// Ledger entries of journals written in the period.
    Ledger,
}

/// One CSV cell: quoted when needed, formula-looking text defused.
fn cell(text: &str) -> String {
    let text = if text.starts_with(['=', '+', '-', '@', '\t', '\r']) && text.parse::<i64>().is_err()
    {
        format!("'{text}")
    } else {
        text.to_owned()
    };
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text
    }
}

fn render(header: &str, rows: Vec<Vec<Option<String>>>) -> String {
    let mut out = format!("{header}\r\n");
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .map(|c| c.as_deref().map(cell).unwrap_or_default())
            .collect();
        out.push_str(&cells.join(","));
        out.push_str("\r\n");
    }
    out
}

/// The export of `what` for `[from, to)`, optionally of one venue. Owners and managers.
pub async fn csv(
    tx: &mut TenantTx,
    actor: &Actor,
    what: Export,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    venue: Option<Uuid>,
) -> Result<String> {
    actor.require_manager()?;
    if from >= to {
        return Err(Error::validation("to", "must be after from"));
    }
    if to - from > chrono::Duration::days(366) {
        return Err(Error::validation("to", "a period is at most 366 days"));
    }
    if let Some(v) = venue {
        actor.check_venue(v, "venue")?;
        crate::venues::get(tx, v).await?;
    }
    let (header, sql) = match what {
        Export::Sessions => (
            "id,venue_id,station_id,station,patron_id,status,payment_method,started_at,ended_at,energy_wh,charged_amount,currency",
            "select s.id::text, s.venue_id::text, s.station_id::text, st.name, s.patron_id::text, s.status::text,
                    s.payment_method, to_char(s.started_at at time zone 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'),
                    to_char(s.ended_at at time zone 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'),
                    s.energy_wh::text, s.charged_amount::text, s.currency::text
               from session s join station st on st.tenant_id = s.tenant_id and st.id = s.station_id
              where s.tenant_id = $1 and s.started_at >= $2 and s.started_at < $3
                and ($4::uuid is null or s.venue_id = $4) and ($5::uuid[] is null or s.venue_id = any($5))
              order by s.started_at, s.id limit $6",
        ),
        Export::Payments => (
            "id,patron_id,venue_id,kind,status,provider,amount,currency,created_at,confirmed_at,failure_reason",
            "select p.id::text, p.patron_id::text, p.venue_id::text, p.kind, p.status, p.provider, p.amount::text,
                    p.currency::text, to_char(p.created_at at time zone 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'),
                    to_char(p.confirmed_at at time zone 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), p.failure_reason
               from payment p
              where p.tenant_id = $1 and p.created_at >= $2 and p.created_at < $3
                and ($4::uuid is null or p.venue_id = $4) and ($5::uuid[] is null or p.venue_id = any($5))
              order by p.created_at, p.id limit $6",
        ),
        Export::Ledger => {
            if actor.venues.is_some() || venue.is_some() {
                return Err(Error::validation(
                    "venueId",
                    "the ledger is exported whole, by members who see every venue",
                ));
            }
            (
                "journal_id,created_at,idempotency_key,kind,session_id,line,owner_kind,owner_id,purpose,amount,currency",
                "select j.id::text, to_char(j.created_at at time zone 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'),
                        j.idempotency_key, j.kind, j.session_id::text, e.line::text, a.owner_kind, a.owner_id::text,
                        a.purpose, e.amount::text, e.currency::text
                   from journal j
                   join journal_entry e on e.tenant_id = j.tenant_id and e.journal_id = j.id
                   join ledger_account a on a.tenant_id = e.tenant_id and a.id = e.account_id
                  where j.tenant_id = $1 and j.created_at >= $2 and j.created_at < $3
                    and $4::uuid is null and $5::uuid[] is null
                  order by j.created_at, j.id, e.line limit $6",
            )
        }
    };
    let rows = sqlx::query(sql)
        .bind(tx.tenant())
        .bind(from)
        .bind(to)
        .bind(venue)
        .bind(actor.venues.as_deref())
        .bind(MAX_ROWS + 1)
        .fetch_all(tx.conn())
        .await?;
    if rows.len() as i64 > MAX_ROWS {
        return Err(Error::validation(
            "from",
            format!("more than {MAX_ROWS} rows: export a shorter period"),
        ));
    }
    let columns = header.split(',').count();
    let rows = rows
        .iter()
        .map(|row| {
            (0..columns)
                .map(|i| sqlx::Row::try_get::<Option<String>, _>(row, i))
                .collect::<std::result::Result<Vec<_>, _>>()
        })
        .collect::<std::result::Result<Vec<_>, _>>()?;
    Ok(render(header, rows))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_are_quoted_formulas_defused_and_negative_amounts_kept() {
        assert_eq!(cell("a,b"), "\"a,b\"");
        assert_eq!(cell("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(cell("=SUM(A1)"), "'=SUM(A1)");
        assert_eq!(cell("-300"), "-300");
        assert_eq!(
            render("a,b", vec![vec![Some("1".into()), None]]),
            "a,b\r\n1,\r\n"
        );
    }
}
