//! Tariffs and their assignment.

use std::collections::BTreeMap;

use async_graphql::{Context, InputObject, Object, SimpleObject};
use chrono::{DateTime, Utc};
use switchyard_core::pricing::{Band as CoreBand, Terms};
use switchyard_core::tariffs::{self, Scope};
use switchyard_core::StationKind;
use uuid::Uuid;

use crate::{begin, GqlResult, ManagerGuard};

/// Pricing terms. Amounts are integer minor units of `currency` (cents for EUR).
#[derive(SimpleObject, InputObject, Clone)]
#[graphql(input_name = "TariffTermsInput")]
pub struct TariffTerms {
    pub currency: String,
    #[graphql(default)]
    pub per_minute: i64,
    #[graphql(default)]
    pub per_kwh: i64,
    #[graphql(default)]
    pub free_minutes: u32,
    #[graphql(default = 60)]
    pub billing_step_secs: u32,
    #[graphql(default)]
    pub minimum_charge: i64,
    pub daily_cap: Option<i64>,
    #[graphql(default)]
    pub deposit: i64,
    pub buyout_threshold: Option<i64>,
    #[graphql(default)]
    pub tier_discounts: Vec<TierDiscount>,
    #[graphql(default)]
    pub bands: Vec<Band>,
    /// Whether a patron may pause its own session from the app (staff always may).
    #[graphql(default = true)]
    pub pausable: bool,
}

/// A discount for patrons of one tier, in basis points (1000 = 10 %).
#[derive(SimpleObject, InputObject, Clone)]
#[graphql(input_name = "TierDiscountInput")]
pub struct TierDiscount {
    pub tier: String,
    pub basis_points: u32,
}

/// A time-of-day rate in venue-local minutes after midnight; `fromMinute > toMinute` wraps past midnight.
#[derive(SimpleObject, InputObject, Clone)]
#[graphql(input_name = "BandInput")]
pub struct Band {
    pub from_minute: u16,
    pub to_minute: u16,
    pub per_minute: i64,
}

impl TariffTerms {
    /// The terms as pricing takes them; a tier named twice is refused (one of its discounts would be lost).
    fn checked(self) -> async_graphql::Result<Terms> {
        let mut seen = std::collections::HashSet::new();
        if let Some(twice) = self
            .tier_discounts
            .iter()
            .find(|d| !seen.insert(d.tier.as_str()))
        {
            return Err(switchyard_core::Error::validation(
                "tierDiscounts",
                format!("the tier {:?} is named twice", twice.tier),
            ))
            .gql();
        }
        Ok(self.into())
    }
}

impl From<TariffTerms> for Terms {
    fn from(t: TariffTerms) -> Self {
        Terms {
            currency: t.currency.trim().to_owned(),
            per_minute: t.per_minute,
            per_kwh: t.per_kwh,
            free_minutes: t.free_minutes,
            billing_step_secs: t.billing_step_secs,
            minimum_charge: t.minimum_charge,
            daily_cap: t.daily_cap,
            deposit: t.deposit,
            buyout_threshold: t.buyout_threshold,
            tier_discounts_bp: t
                .tier_discounts
                .into_iter()
                .map(|d| (d.tier, d.basis_points))
                .collect::<BTreeMap<_, _>>(),
            bands: t
                .bands
                .into_iter()
                .map(|b| CoreBand {
                    from_minute: b.from_minute,
                    to_minute: b.to_minute,
                    per_minute: b.per_minute,
                })
                .collect(),
            pausable: t.pausable,
        }
    }
}

impl From<Terms> for TariffTerms {
    fn from(t: Terms) -> Self {
        Self {
            currency: t.currency,
            per_minute: t.per_minute,
            per_kwh: t.per_kwh,
            free_minutes: t.free_minutes,
            billing_step_secs: t.billing_step_secs,
            minimum_charge: t.minimum_charge,
            daily_cap: t.daily_cap,
            deposit: t.deposit,
            buyout_threshold: t.buyout_threshold,
            tier_discounts: t
                .tier_discounts_bp
                .into_iter()
                .map(|(tier, basis_points)| TierDiscount { tier, basis_points })
                .collect(),
            bands: t
                .bands
                .into_iter()
                .map(|b| Band {
                    from_minute: b.from_minute,
                    to_minute: b.to_minute,
                    per_minute: b.per_minute,
                })
                .collect(),
            pausable: t.pausable,
        }
    }
}

#[derive(SimpleObject)]
pub struct Tariff {
    pub id: Uuid,
    pub name: String,
    /// Incremented by every change of terms; sessions keep the version they started with.
    pub version: i32,
    pub terms: TariffTerms,
    pub archived_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

impl From<tariffs::Tariff> for Tariff {
    fn from(t: tariffs::Tariff) -> Self {
        Self {
            id: t.id,
            name: t.name,
            version: t.version,
            terms: t.terms.into(),
            archived_at: t.archived_at,
            created_at: t.created_at,
        }
    }
}

#[derive(Default)]
pub struct TariffQuery;

#[Object]
impl TariffQuery {
    async fn tariffs(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<Tariff>> {
        let (_, mut tx) = begin(ctx).await?;
        Ok(tariffs::list(&mut tx)
            .await
            .gql()?
            .into_iter()
            .map(Tariff::from)
            .collect())
    }

    async fn tariff(&self, ctx: &Context<'_>, id: Uuid) -> async_graphql::Result<Tariff> {
        let (_, mut tx) = begin(ctx).await?;
        Ok(tariffs::get(&mut tx, id).await.gql()?.into())
    }

    /// What `terms` would charge for `minutes` from `startAt` in `timezone` (a patron of `tier`, `energyWh`
    /// delivered), with the lines that explain it: a tariff editor's live preview. Nothing is stored. Members only.
    #[expect(
        clippy::too_many_arguments,
        reason = "a GraphQL field's arguments are its parameters"
    )]
    async fn price_preview(
        &self,
        ctx: &Context<'_>,
        terms: TariffTerms,
        timezone: String,
        start_at: DateTime<Utc>,
        minutes: i64,
        tier: Option<String>,
        #[graphql(default)] energy_wh: i64,
    ) -> async_graphql::Result<crate::sessions::Cost> {
        crate::actor(ctx)?;
        let terms = terms.checked()?;
        Ok(switchyard_core::pricing::preview(
            &terms,
            &timezone,
            start_at,
            minutes,
            tier.as_deref(),
            energy_wh,
        )
        .gql()?
        .into())
    }
}

#[derive(Default)]
pub struct TariffMutation;

#[Object]
impl TariffMutation {
    #[graphql(guard = "ManagerGuard")]
    async fn create_tariff(
        &self,
        ctx: &Context<'_>,
        name: String,
        terms: TariffTerms,
        #[graphql(
            desc = "Applies it at once, as `assignTariff` does, in the same transaction: a refused assignment creates nothing."
        )]
        apply_to: Option<TariffScopeInput>,
    ) -> async_graphql::Result<Tariff> {
        let (actor, mut tx) = begin(ctx).await?;
        let tariff = tariffs::create(&mut tx, actor, &name, terms.checked()?)
            .await
            .gql()?;
        if let Some(scope) = apply_to {
            let (venue, kind, station) = (scope.venue_id, scope.station_kind, scope.station_id);
            apply(&mut tx, actor, tariff.id, venue, kind, station).await?;
        }
        tx.commit().await.gql()?;
        Ok(tariff.into())
    }

    /// Renames the tariff and/or replaces its terms (a new version). With `expectedVersion` (the version the edit
    /// was made from), refused with `conflict` when the tariff has changed since, so that nobody's change is lost.
    #[graphql(guard = "ManagerGuard")]
    async fn update_tariff(
        &self,
        ctx: &Context<'_>,
        id: Uuid,
        name: Option<String>,
        terms: Option<TariffTerms>,
        expected_version: Option<i32>,
    ) -> async_graphql::Result<Tariff> {
        let (actor, mut tx) = begin(ctx).await?;
        let terms = terms.map(TariffTerms::checked).transpose()?;
        let tariff = tariffs::update(&mut tx, actor, id, name.as_deref(), terms, expected_version)
            .await
            .gql()?;
        tx.commit().await.gql()?;
        Ok(tariff.into())
    }

    /// Applies a tariff to a venue, to one kind of station at it, or to one station. The most specific wins.
    #[graphql(guard = "ManagerGuard")]
    async fn assign_tariff(
        &self,
        ctx: &Context<'_>,
        input: AssignTariffInput,
    ) -> async_graphql::Result<Tariff> {
        let (actor, mut tx) = begin(ctx).await?;
        let (venue, kind, station) = (input.venue_id, input.station_kind, input.station_id);
        apply(&mut tx, actor, input.tariff_id, venue, kind, station).await?;
        let tariff = tariffs::get(&mut tx, input.tariff_id).await.gql()?;
        tx.commit().await.gql()?;
        Ok(tariff.into())
    }
}

/// Assigns `tariff` at a venue the member may see: to it, to one kind of station there, or to one station.
async fn apply(
    tx: &mut switchyard_core::db::TenantTx,
    actor: &switchyard_core::Actor,
    tariff: Uuid,
    venue_id: Uuid,
    station_kind: Option<StationKind>,
    station_id: Option<Uuid>,
) -> async_graphql::Result<()> {
    actor.check_venue(venue_id, "venue").gql()?;
    let scope = Scope {
        venue_id,
        station_kind,
        station_id,
    };
    tariffs::assign(tx, actor, tariff, scope).await.gql()
}

/// Where a new tariff applies: a venue, one kind of station at it, or one of its stations.
#[derive(InputObject)]
pub struct TariffScopeInput {
    pub venue_id: Uuid,
    pub station_kind: Option<StationKind>,
    pub station_id: Option<Uuid>,
}

#[derive(InputObject)]
pub struct AssignTariffInput {
    pub tariff_id: Uuid,
    pub venue_id: Uuid,
    pub station_kind: Option<StationKind>,
    pub station_id: Option<Uuid>,
}
