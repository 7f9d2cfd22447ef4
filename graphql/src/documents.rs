//! Documents: receipts, invoices and report kinds (issue 12), the issuer's legal details and each venue's tax.
//! Every document is handed out as a short-lived presigned URL, and only to someone who may see it: members within
//! its venues, or the patron for its own receipts.

use async_graphql::{Context, Enum, Object, SimpleObject};
use chrono::{DateTime, Utc};
use switchyard_core::documents::{self, invoices, receipts, reports, Store};
use switchyard_core::{scope, Error, TenantId};
use uuid::Uuid;

use crate::{begin, begin_patron, GqlResult, ManagerGuard};

fn store<'a>(ctx: &'a Context<'_>) -> async_graphql::Result<&'a Store> {
    ctx.data::<Store>()
}

/// A presigned download link.
#[derive(SimpleObject)]
pub struct DocumentLink {
    /// GET it within `expiresAt` (`DOCUMENT_URL_TTL_SECS`); ask again for a fresh one.
    pub url: String,
    pub expires_at: DateTime<Utc>,
}

impl From<documents::Link> for DocumentLink {
    fn from(l: documents::Link) -> Self {
        Self {
            url: l.url,
            expires_at: l.expires_at,
        }
    }
}

/// A session's receipt (a PDF in object storage).
#[derive(SimpleObject)]
pub struct Receipt {
    pub id: Uuid,
    pub session_id: Uuid,
    pub currency: String,
    /// What the session cost, tax included (minor units).
    pub total: i64,
    /// The tax included in `total`, at the venue's rate.
    pub tax: i64,
    pub byte_size: i32,
    pub created_at: DateTime<Utc>,
    pub download: DocumentLink,
}

async fn receipt(
    tenant: TenantId,
    store: &Store,
    r: receipts::Receipt,
) -> async_graphql::Result<Receipt> {
    let link = store.link(tenant, &r.object_key).await.gql()?;
    Ok(Receipt {
        id: r.id,
        session_id: r.session_id,
        currency: r.currency,
        total: r.total,
        tax: r.tax,
        byte_size: r.byte_size,
        created_at: r.created_at,
        download: link.into(),
    })
}

#[derive(Enum, Clone, Copy, PartialEq, Eq)]
pub enum InvoiceStatus {
    Draft,
    Issued,
    Paid,
    Void,
}

impl InvoiceStatus {
    fn as_str(self) -> &'static str {
        match self {
            Self::Draft => "draft",
            Self::Issued => "issued",
            Self::Paid => "paid",
            Self::Void => "void",
        }
    }
    fn parse(s: &str) -> Self {
        match s {
            "issued" => Self::Issued,
            "paid" => Self::Paid,
            "void" => Self::Void,
            _ => Self::Draft,
        }
    }
}

pub struct Invoice(invoices::Invoice);

#[Object]
impl Invoice {
    async fn id(&self) -> Uuid {
        self.0.id
    }
    async fn patron_id(&self) -> Uuid {
        self.0.patron_id
    }
    async fn status(&self) -> InvoiceStatus {
        InvoiceStatus::parse(&self.0.status)
    }
    /// The number within its year, once issued: 1, 2, 3 … with no gaps per tenant and year.
    async fn number(&self) -> Option<i32> {
        self.0.number
    }
    async fn year(&self) -> Option<i32> {
        self.0.year
    }
    /// The printed number, `2026-000042`.
    async fn display_number(&self) -> Option<String> {
        self.0.display_number()
    }
    async fn currency(&self) -> &str {
        &self.0.currency
    }
    /// Tax included (minor units).
    async fn total(&self) -> i64 {
        self.0.total
    }
    async fn tax(&self) -> i64 {
        self.0.tax
    }
    async fn issued_at(&self) -> Option<DateTime<Utc>> {
        self.0.issued_at
    }
    async fn paid_at(&self) -> Option<DateTime<Utc>> {
        self.0.paid_at
    }
    async fn voided_at(&self) -> Option<DateTime<Utc>> {
        self.0.voided_at
    }
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
    /// The sessions on it (none once void).
    async fn session_ids(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<Uuid>> {
        let (_, mut tx) = begin(ctx).await?;
        invoices::session_ids(&mut tx, self.0.id).await.gql()
    }
    /// The PDF, once issued.
    async fn download(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<DocumentLink>> {
        let Some(key) = &self.0.object_key else {
            return Ok(None);
        };
        let (actor, _) = begin(ctx).await?;
        Ok(Some(
            store(ctx)?.link(actor.tenant, key).await.gql()?.into(),
        ))
    }
}

/// Where a tenant's documents name it.
#[derive(SimpleObject)]
pub struct LegalDetails {
    pub name: String,
    pub legal_name: Option<String>,
    pub legal_address: Option<String>,
    pub tax_id: Option<String>,
}

impl From<documents::Legal> for LegalDetails {
    fn from(l: documents::Legal) -> Self {
        Self {
            name: l.name,
            legal_name: l.legal_name,
            legal_address: l.legal_address,
            tax_id: l.tax_id,
        }
    }
}

#[derive(SimpleObject)]
pub struct VenueTax {
    pub venue_id: Uuid,
    /// Basis points included in the venue's prices (1900 = 19 %).
    pub rate_bp: i32,
    pub label: String,
}

impl From<documents::VenueTax> for VenueTax {
    fn from(t: documents::VenueTax) -> Self {
        Self {
            venue_id: t.venue_id,
            rate_bp: t.rate_bp,
            label: t.label,
        }
    }
}

/// A kind of kiosk report (seed 003) and its template.
#[derive(SimpleObject)]
pub struct ReportKind {
    pub id: Uuid,
    pub key: String,
    pub title: String,
    pub template: async_graphql::Json<serde_json::Value>,
}

impl From<reports::ReportKind> for ReportKind {
    fn from(k: reports::ReportKind) -> Self {
        Self {
            id: k.id,
            key: k.key,
            title: k.title,
            template: async_graphql::Json(k.template),
        }
    }
}

/// A venue's month: the sessions that ended in it and what they were charged, with the PDF.
#[derive(SimpleObject)]
pub struct VenueMonthlyReport {
    pub venue_id: Uuid,
    pub year: i32,
    pub month: u32,
    pub currency: String,
    pub sessions: i64,
    pub minutes: i64,
    pub energy_wh: i64,
    /// Charged, tax included (minor units).
    pub total: i64,
    pub tax: i64,
    pub net: i64,
    pub download: DocumentLink,
}

#[derive(Default)]
pub struct DocumentQuery;

#[Object]
impl DocumentQuery {
    /// The receipt of an ended session (rental, charge): made and stored on the first request, the same one
    /// afterwards. Members within the session's venue; a running session → `conflict`.
    async fn session_receipt(
        &self,
        ctx: &Context<'_>,
        session_id: Uuid,
    ) -> async_graphql::Result<Receipt> {
        let (actor, mut tx) = begin(ctx).await?;
        scope::session(&mut tx, actor, session_id).await.gql()?;
        let store = store(ctx)?;
        let r = receipts::for_session(&mut tx, store, session_id)
            .await
            .gql()?;
        tx.commit().await.gql()?;
        receipt(actor.tenant, store, r).await
    }

    /// The signed-in patron's receipt of one of its own ended sessions (another's → `not_found`).
    async fn my_receipt(
        &self,
        ctx: &Context<'_>,
        session_id: Uuid,
    ) -> async_graphql::Result<Receipt> {
        let (patron, mut tx) = begin_patron(ctx).await?;
        let session = switchyard_core::sessions::get(&mut tx, session_id)
            .await
            .gql()?;
        if session.patron_id != patron.patron_id {
            return Err(Error::NotFound("session")).gql();
        }
        let store = store(ctx)?;
        let r = receipts::for_session(&mut tx, store, session_id)
            .await
            .gql()?;
        tx.commit().await.gql()?;
        receipt(patron.tenant, store, r).await
    }

    #[graphql(guard = "ManagerGuard")]
    async fn invoice(&self, ctx: &Context<'_>, id: Uuid) -> async_graphql::Result<Invoice> {
        let (actor, mut tx) = begin(ctx).await?;
        Ok(Invoice(invoices::get(&mut tx, actor, id).await.gql()?))
    }

    /// Invoices, newest first (`limit` at most 500), of one patron or all, by status.
    #[graphql(
        guard = "ManagerGuard",
        complexity = "crate::rows(limit, child_complexity)"
    )]
    async fn invoices(
        &self,
        ctx: &Context<'_>,
        patron_id: Option<Uuid>,
        status: Option<InvoiceStatus>,
        #[graphql(default = 100)] limit: i64,
    ) -> async_graphql::Result<Vec<Invoice>> {
        let (actor, mut tx) = begin(ctx).await?;
        Ok(invoices::list(
            &mut tx,
            actor,
            patron_id,
            status.map(InvoiceStatus::as_str),
            limit,
        )
        .await
        .gql()?
        .into_iter()
        .map(Invoice)
        .collect())
    }

    /// The legal details printed on the tenant's documents.
    async fn legal_details(&self, ctx: &Context<'_>) -> async_graphql::Result<LegalDetails> {
        let (_, mut tx) = begin(ctx).await?;
        Ok(documents::legal(&mut tx).await.gql()?.into())
    }

    /// A venue's tax rate and label.
    async fn venue_tax(
        &self,
        ctx: &Context<'_>,
        venue_id: Uuid,
    ) -> async_graphql::Result<VenueTax> {
        let (actor, mut tx) = begin(ctx).await?;
        actor.check_venue(venue_id, "venue").gql()?;
        Ok(documents::venue_tax(&mut tx, venue_id).await.gql()?.into())
    }

    /// The monthly PDF report of a venue (sessions ended in that month of the venue's time zone), made and stored
    /// on request. Owners and managers of the venue.
    #[graphql(guard = "ManagerGuard")]
    async fn venue_monthly_report(
        &self,
        ctx: &Context<'_>,
        venue_id: Uuid,
        year: i32,
        month: u32,
    ) -> async_graphql::Result<VenueMonthlyReport> {
        let (actor, mut tx) = begin(ctx).await?;
        let store = store(ctx)?;
        let r = documents::monthly::generate(&mut tx, actor, store, venue_id, year, month)
            .await
            .gql()?;
        let link = store.link(actor.tenant, &r.object_key).await.gql()?;
        Ok(VenueMonthlyReport {
            venue_id: r.venue_id,
            year: r.year,
            month: r.month,
            currency: r.currency,
            sessions: r.sessions,
            minutes: r.minutes,
            energy_wh: r.energy_wh,
            total: r.split.gross,
            tax: r.split.tax,
            net: r.split.net,
            download: link.into(),
        })
    }

    /// Sessions (started), payments (created) or ledger entries (of journals written) in `[from, to)` as CSV
    /// (RFC 4180, header line, amounts in minor units, at most 50,000 rows and 366 days). Owners and managers;
    /// the ledger only for members who see every venue.
    #[graphql(guard = "ManagerGuard")]
    async fn export_csv(
        &self,
        ctx: &Context<'_>,
        what: documents::export::Export,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        venue_id: Option<Uuid>,
    ) -> async_graphql::Result<String> {
        let (actor, mut tx) = begin(ctx).await?;
        documents::export::csv(&mut tx, actor, what, from, to, venue_id)
            .await
            .gql()
    }

    /// The tenant's kiosk report kinds.
    async fn report_kinds(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<ReportKind>> {
        let (_, mut tx) = begin(ctx).await?;
        Ok(reports::kinds(&mut tx)
            .await
            .gql()?
            .into_iter()
            .map(ReportKind::from)
            .collect())
    }
}

#[derive(Default)]
pub struct DocumentMutation;

#[Object]
impl DocumentMutation {
    /// Sets the legal name, address and tax id printed on receipts and invoices (empty clears). Owners.
    async fn set_legal_details(
        &self,
        ctx: &Context<'_>,
        legal_name: Option<String>,
        legal_address: Option<String>,
        tax_id: Option<String>,
    ) -> async_graphql::Result<LegalDetails> {
        let (actor, mut tx) = begin(ctx).await?;
        let legal = documents::set_legal(&mut tx, actor, legal_name, legal_address, tax_id)
            .await
            .gql()?;
        tx.commit().await.gql()?;
        Ok(legal.into())
    }

    /// Sets a venue's tax rate (basis points included in its prices, 0–10000) and label. Owners and managers.
    #[graphql(guard = "ManagerGuard")]
    async fn set_venue_tax(
        &self,
        ctx: &Context<'_>,
        venue_id: Uuid,
        rate_bp: i32,
        label: Option<String>,
    ) -> async_graphql::Result<VenueTax> {
        let (actor, mut tx) = begin(ctx).await?;
        let tax = documents::set_venue_tax(&mut tx, actor, venue_id, rate_bp, label)
            .await
            .gql()?;
        tx.commit().await.gql()?;
        Ok(tax.into())
    }

    /// A draft invoice over a patron's ended sessions (one currency; each session on one invoice at a time).
    #[graphql(guard = "ManagerGuard")]
    async fn create_invoice(
        &self,
        ctx: &Context<'_>,
        patron_id: Uuid,
        session_ids: Vec<Uuid>,
    ) -> async_graphql::Result<Invoice> {
        let (actor, mut tx) = begin(ctx).await?;
        let invoice = invoices::create(&mut tx, actor, patron_id, &session_ids)
            .await
            .gql()?;
        tx.commit().await.gql()?;
        Ok(Invoice(invoice))
    }

    /// Issues a draft: the next number of the tenant's year, and its PDF. Issuing again returns it unchanged.
    #[graphql(guard = "ManagerGuard")]
    async fn issue_invoice(&self, ctx: &Context<'_>, id: Uuid) -> async_graphql::Result<Invoice> {
        let (actor, mut tx) = begin(ctx).await?;
        let invoice = invoices::issue(&mut tx, actor, store(ctx)?, id)
            .await
            .gql()?;
        tx.commit().await.gql()?;
        Ok(Invoice(invoice))
    }

    /// Marks an issued invoice paid (`paidAt`); again changes nothing.
    #[graphql(guard = "ManagerGuard")]
    async fn mark_invoice_paid(
        &self,
        ctx: &Context<'_>,
        id: Uuid,
    ) -> async_graphql::Result<Invoice> {
        let (actor, mut tx) = begin(ctx).await?;
        let invoice = invoices::mark_paid(&mut tx, actor, id).await.gql()?;
        tx.commit().await.gql()?;
        Ok(Invoice(invoice))
    }

    /// Voids a draft or issued invoice (it keeps its number; its sessions can be invoiced again).
    #[graphql(guard = "ManagerGuard")]
    async fn void_invoice(&self, ctx: &Context<'_>, id: Uuid) -> async_graphql::Result<Invoice> {
        let (actor, mut tx) = begin(ctx).await?;
        let invoice = invoices::void(&mut tx, actor, id).await.gql()?;
        tx.commit().await.gql()?;
        Ok(Invoice(invoice))
    }

    /// Defines or redefines a kiosk report kind (`key` as in `POST /api/v1/reports/{key}`) with its template (see
    /// the manual). Owners and managers.
    #[graphql(guard = "ManagerGuard")]
    async fn define_report_kind(
        &self,
        ctx: &Context<'_>,
        key: String,
        title: String,
        template: async_graphql::Json<serde_json::Value>,
    ) -> async_graphql::Result<ReportKind> {
        let (actor, mut tx) = begin(ctx).await?;
        let kind = reports::define_kind(&mut tx, actor, &key, &title, template.0)
            .await
            .gql()?;
        tx.commit().await.gql()?;
        Ok(kind.into())
    }
}
