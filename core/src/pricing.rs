//! Pricing: one pure function of (tariff terms, usage, patron tier) that returns an amount in minor units and the
//! lines explaining it. Live cost, billing ticks and the final receipt all call [`price`].
//!
//! The price is **cumulative** and **monotone**: `price(start..t)` never decreases as `t` grows. A billing tick
//! charges `price(start..now) - already_charged`, so the ticks of a session always add up to the one-shot price of
//! the same usage, whatever the tick times.
//!
//! Rules, in order:
//! 1. The first `free_minutes` are free.
//! 2. The rest of the elapsed time (to the millisecond) is rounded **up** to whole `billing_step_secs`: any
//!    started step is billed.
//! 3. Each second of that billed time costs the rate in force at that moment in the venue's time zone: the first
//!    time-of-day band containing it, else `per_minute`. Per venue-local calendar day, `Σ rate × seconds / 60` is
//!    rounded half-up to a minor unit, then capped at `daily_cap`.
//! 4. Energy costs `per_kwh × Wh / 1000`, rounded half-up.
//! 5. If anything is due, at least `minimum_charge` is due.
//! 6. The tier discount (basis points) is taken off, rounded half-up.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, NaiveDate, NaiveTime, TimeZone, Timelike, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// A time-of-day rate, in venue-local minutes after midnight. `from > to` wraps past midnight (22:00–06:00).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Band {
    pub from_minute: u16,
    pub to_minute: u16,
    /// Minor units per minute inside the band.
    pub per_minute: i64,
}

impl Band {
    fn contains(&self, minute: u32) -> bool {
        let (from, to) = (u32::from(self.from_minute), u32::from(self.to_minute));
        if from <= to {
            (from..to).contains(&minute)
        } else {
            minute >= from || minute < to
        }
    }
}

/// The priced part of a tariff; a session keeps a copy (its snapshot) for its whole life.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Terms {
    pub currency: String,
    /// Minor units per minute.
    pub per_minute: i64,
    /// Minor units per kWh.
    pub per_kwh: i64,
    pub free_minutes: u32,
    /// Billed time is rounded up to a multiple of this (seconds, at least 1).
    pub billing_step_secs: u32,
    pub minimum_charge: i64,
    /// Most the time part may cost per venue-local calendar day.
    pub daily_cap: Option<i64>,
    /// Held at start, released or captured at the end.
    pub deposit: i64,
    /// Charges at which a rental becomes a purchase (powerbanks).
    pub buyout_threshold: Option<i64>,
    /// Tier name → discount in basis points (1000 = 10 %).
    pub tier_discounts_bp: BTreeMap<String, u32>,
    pub bands: Vec<Band>,
    /// Whether a patron may pause a session on its own (staff always may). Terms stored before this setting
    /// existed allow it.
    #[serde(default = "allowed")]
    pub pausable: bool,
}

fn allowed() -> bool {
    true
}

impl Terms {
    /// Terms in `currency` that charge nothing yet: no rate, free period, minimum, cap, deposit, buyout, discount or
    /// band, a 60-second billing step, pausable. Set what the tariff charges on top
    /// (`Terms { per_kwh: 30, ..Terms::base("EUR") }`).
    pub fn base(currency: &str) -> Self {
        Self {
            currency: currency.into(),
            per_minute: 0,
            per_kwh: 0,
            free_minutes: 0,
            billing_step_secs: 60,
            minimum_charge: 0,
            daily_cap: None,
            deposit: 0,
            buyout_threshold: None,
            tier_discounts_bp: BTreeMap::new(),
            bands: vec![],
            pausable: true,
        }
    }

    /// Checks the terms are coherent; the error names the field.
    pub fn validate(&self) -> Result<()> {
        if crate::money::minor_units(&self.currency).is_none() {
            return Err(Error::validation(
                "currency",
                "must be an ISO 4217 code in capitals, like EUR",
            ));
        }
        let non_negative = [
            ("perMinute", self.per_minute),
            ("perKwh", self.per_kwh),
            ("minimumCharge", self.minimum_charge),
            ("deposit", self.deposit),
        ];
        for (field, value) in non_negative {
            if !(0..=MAX_AMOUNT).contains(&value) {
                return Err(Error::validation(
                    field,
                    format!("must be between 0 and {MAX_AMOUNT}"),
                ));
            }
        }
        if self.billing_step_secs == 0 || self.billing_step_secs > 86_400 {
            return Err(Error::validation(
                "billingStepSecs",
                "must be between 1 and 86400",
            ));
        }
        if self.free_minutes > 24 * 60 {
            return Err(Error::validation("freeMinutes", "must be at most 1440"));
        }
        if let Some(cap) = self.daily_cap {
            if !(1..=MAX_AMOUNT).contains(&cap) {
                return Err(Error::validation("dailyCap", "must be positive"));
            }
            if self.minimum_charge > cap {
                return Err(Error::validation(
                    "minimumCharge",
                    "must not exceed the daily cap",
                ));
            }
        }
        if let Some(threshold) = self.buyout_threshold {
            if !(1..=MAX_AMOUNT).contains(&threshold) {
                return Err(Error::validation("buyoutThreshold", "must be positive"));
            }
        }
        // Every price and every tick reads all of them: a day of quarter-hour bands, a hundred tiers at most.
        if self.bands.len() > MAX_BANDS {
            return Err(Error::validation(
                "bands",
                format!("at most {MAX_BANDS} bands (a day in quarter hours)"),
            ));
        }
        if self.tier_discounts_bp.len() > MAX_TIER_DISCOUNTS {
            return Err(Error::validation(
                "tierDiscounts",
                format!("at most {MAX_TIER_DISCOUNTS} tiers"),
            ));
        }
        if self.tier_discounts_bp.values().any(|bp| *bp > 10_000) {
            return Err(Error::validation(
                "tierDiscounts",
                "a discount is at most 10000 basis points (100 %)",
            ));
        }
        // Named as a patron's tier is (1–32 characters, nothing around them), or it could never match one.
        for tier in self.tier_discounts_bp.keys() {
            if crate::validate::text("tierDiscounts", tier, 1, 32)? != tier {
                return Err(Error::validation(
                    "tierDiscounts",
                    "a tier's name has no spaces around it",
                ));
            }
        }
        for band in &self.bands {
            if band.from_minute >= 1440
                || band.to_minute >= 1440
                || band.from_minute == band.to_minute
            {
                return Err(Error::validation(
                    "bands",
                    "a band runs between two different minutes of 0..1439",
                ));
            }
            if !(0..=MAX_AMOUNT).contains(&band.per_minute) {
                return Err(Error::validation(
                    "bands",
                    "a band's rate must be between 0 and the maximum amount",
                ));
            }
        }
        Ok(())
    }
}

/// The most time-of-day bands a tariff may have.
pub const MAX_BANDS: usize = 96;

/// The most tiers a tariff may discount.
pub const MAX_TIER_DISCOUNTS: usize = 100;

/// The largest single amount accepted anywhere (10^12 minor units); keeps every product within `i64`/`i128`.
pub const MAX_AMOUNT: i64 = 1_000_000_000_000;

/// What was used.
#[derive(Debug, Clone, Copy)]
pub struct Usage<'a> {
    pub started_at: DateTime<Utc>,
    pub until: DateTime<Utc>,
    /// Paused intervals (sorted, not overlapping): not billed. Time-of-day rates apply to the wall-clock time
    /// actually used.
    pub pauses: &'a [(DateTime<Utc>, DateTime<Utc>)],
    /// Energy delivered so far (EV charging), from meter readings.
    pub energy_wh: i64,
    pub tier: Option<&'a str>,
}

/// One line of "why was I charged this".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Line {
    /// `free_period`, `time`, `daily_cap`, `energy`, `minimum_charge`, `tier_discount`.
    pub kind: String,
    pub description: String,
    /// Minor units; negative for reductions.
    pub amount: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Price {
    pub amount: i64,
    pub currency: String,
    pub lines: Vec<Line>,
}

/// The longest usage a price preview covers: a week.
pub const MAX_PREVIEW_MINUTES: i64 = 7 * 24 * 60;

/// What `terms` would charge for `minutes` from `start` in the time zone `timezone` (a tariff editor's live
/// preview): the same pricing a session gets, with its lines. The error names the input that is wrong.
pub fn preview(
    terms: &Terms,
    timezone: &str,
    start: DateTime<Utc>,
    minutes: i64,
    tier: Option<&str>,
    energy_wh: i64,
) -> Result<Price> {
    terms.validate()?;
    let tz: Tz = timezone.parse().map_err(|_| {
        Error::validation("timezone", "must be an IANA time zone, like Europe/Berlin")
    })?;
    if !(1..=MAX_PREVIEW_MINUTES).contains(&minutes) {
        return Err(Error::validation(
            "minutes",
            format!("must be between 1 and {MAX_PREVIEW_MINUTES}"),
        ));
    }
    if !(1970..=9999).contains(&chrono::Datelike::year(&start)) {
        return Err(Error::validation(
            "startAt",
            "must be a time in the years 1970 to 9999",
        ));
    }
    if !(0..=1_000_000_000).contains(&energy_wh) {
        return Err(Error::validation(
            "energyWh",
            "must be between 0 and 1000000000",
        ));
    }
    Ok(price(
        terms,
        tz,
        Usage {
            started_at: start,
            until: start + Duration::minutes(minutes),
            pauses: &[],
            energy_wh,
            tier,
        },
    ))
}

/// Prices `usage` under `terms` in the venue's time zone `tz`.
pub fn price(terms: &Terms, tz: Tz, usage: Usage<'_>) -> Price {
    let mut lines = Vec::new();
    let fmt = |amount: i64| crate::money::format(amount, &terms.currency);
    let free_ms = i64::from(terms.free_minutes) * 60_000;
    if terms.free_minutes > 0 {
        lines.push(Line {
            kind: "free_period".into(),
            description: format!("first {} min free", terms.free_minutes),
            amount: 0,
        });
    }

    let mut subtotal: i64 = 0;
    let step = i64::from(terms.billing_step_secs);
    let mut by_day: BTreeMap<NaiveDate, i128> = BTreeMap::new();
    for (from, to) in billed_spans(usage, free_ms, step * 1000) {
        for (day, rate_ms) in rate_ms_by_day(terms, tz, from, to) {
            *by_day.entry(day).or_default() += rate_ms;
        }
    }
    for (day, rate_ms) in by_day {
        let amount = i64::try_from((rate_ms + 30_000) / 60_000).unwrap_or(i64::MAX);
        if amount == 0 {
            continue;
        }
        lines.push(Line {
            kind: "time".into(),
            description: format!(
                "{day}: time at the rates in force ({} billing steps)",
                step_label(step)
            ),
            amount,
        });
        let capped = match terms.daily_cap {
            Some(cap) if amount > cap => {
                lines.push(Line {
                    kind: "daily_cap".into(),
                    description: format!("{day}: capped at {} a day", fmt(cap)),
                    amount: cap - amount,
                });
                cap
            }
            _ => amount,
        };
        subtotal = subtotal.saturating_add(capped);
    }

    if terms.per_kwh > 0 && usage.energy_wh > 0 {
        let energy = (i128::from(terms.per_kwh) * i128::from(usage.energy_wh) + 500) / 1000;
        let energy = i64::try_from(energy).unwrap_or(i64::MAX);
        lines.push(Line {
            kind: "energy".into(),
            description: format!(
                "{}.{:03} kWh at {}/kWh",
                usage.energy_wh / 1000,
                usage.energy_wh % 1000,
                fmt(terms.per_kwh)
            ),
            amount: energy,
        });
        subtotal = subtotal.saturating_add(energy);
    }

    if subtotal > 0 && subtotal < terms.minimum_charge {
        lines.push(Line {
            kind: "minimum_charge".into(),
            description: format!("minimum charge {}", fmt(terms.minimum_charge)),
            amount: terms.minimum_charge - subtotal,
        });
        subtotal = terms.minimum_charge;
    }

    let mut amount = subtotal;
    if let Some(tier) = usage.tier {
        if let Some(bp) = terms.tier_discounts_bp.get(tier).filter(|bp| **bp > 0) {
            let discount = (i128::from(subtotal) * i128::from(*bp) + 5000) / 10_000;
            let discount = i64::try_from(discount).unwrap_or(0);
            lines.push(Line {
                kind: "tier_discount".into(),
                description: format!("{tier} tier: {}.{:02} % off", bp / 100, bp % 100),
                amount: -discount,
            });
            amount -= discount;
        }
    }
    Price {
        amount,
        currency: terms.currency.clone(),
        lines,
    }
}

/// The wall-clock spans billed at the time rates: each active (unpaused) interval up to `until`, less the first
/// `free_ms` of active time, rounded up to whole billing steps of `step_ms` — per interval, so a step started before
/// a pause is billed where it started and what was billed never changes later.
fn billed_spans(
    usage: Usage<'_>,
    free_ms: i64,
    step_ms: i64,
) -> Vec<(DateTime<Utc>, DateTime<Utc>)> {
    let mut active = Vec::new();
    let mut cursor = usage.started_at;
    for &(from, to) in usage.pauses {
        let (from, to) = (from.clamp(cursor, usage.until), to.max(cursor));
        if from > cursor {
            active.push((cursor, from));
        }
        cursor = to;
    }
    if usage.until > cursor {
        active.push((cursor, usage.until));
    }
    let mut free_left = free_ms;
    let mut spans = Vec::new();
    for (from, to) in active {
        let length = (to - from).num_milliseconds();
        let free = free_left.min(length);
        free_left -= free;
        let used = length - free;
        if used > 0 {
            let billed = (used + step_ms - 1) / step_ms * step_ms;
            let start = from + Duration::milliseconds(free);
            spans.push((start, start + Duration::milliseconds(billed)));
        }
    }
    spans
}

fn step_label(step: i64) -> String {
    if step % 60 == 0 {
        format!("{} min", step / 60)
    } else {
        format!("{step} s")
    }
}

/// Σ rate × milliseconds over `[from, to)`, per venue-local calendar day. The interval is cut at every local midnight and
/// band edge; each piece has one rate.
fn rate_ms_by_day(
    terms: &Terms,
    tz: Tz,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> BTreeMap<NaiveDate, i128> {
    let mut cuts = vec![from, to];
    let first = from.with_timezone(&tz).date_naive();
    let last = to.with_timezone(&tz).date_naive();
    let mut day = first;
    while day <= last {
        let mut minutes = vec![0u16];
        for band in &terms.bands {
            minutes.push(band.from_minute);
            minutes.push(band.to_minute);
        }
        for minute in minutes {
            let time = NaiveTime::from_hms_opt(u32::from(minute) / 60, u32::from(minute) % 60, 0);
            if let Some(local) =
                time.and_then(|t| tz.from_local_datetime(&day.and_time(t)).earliest())
            {
                let at = local.with_timezone(&Utc);
                if at > from && at < to {
                    cuts.push(at);
                }
            }
        }
        match day.succ_opt() {
            Some(next) => day = next,
            None => break,
        }
    }
    cuts.sort();
    cuts.dedup();

    let mut by_day: BTreeMap<NaiveDate, i128> = BTreeMap::new();
    for pair in cuts.windows(2) {
        let (start, end) = (pair[0], pair[1]);
        let local = start.with_timezone(&tz);
        let minute = local.hour() * 60 + local.minute();
        let rate = terms
            .bands
            .iter()
            .find(|b| b.contains(minute))
            .map_or(terms.per_minute, |b| b.per_minute);
        let millis = (end - start).num_milliseconds();
        *by_day.entry(local.date_naive()).or_default() += i128::from(rate) * i128::from(millis);
    }
    by_day
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_preview_far_outside_the_calendar_is_refused_not_overflowed() {
        for start in [
            DateTime::<Utc>::MAX_UTC,
            DateTime::<Utc>::MIN_UTC,
            DateTime::<Utc>::UNIX_EPOCH - Duration::seconds(1),
        ] {
            let refused = preview(&terms(), "Europe/Berlin", start, 60, None, 0);
            assert!(
                matches!(&refused, Err(Error::Validation { field, .. }) if *field == "startAt"),
                "{start}: {refused:?}"
            );
        }
        let fine = preview(
            &terms(),
            "Europe/Berlin",
            DateTime::<Utc>::UNIX_EPOCH,
            60,
            None,
            0,
        );
        assert_eq!(fine.map(|p| p.amount).ok(), Some(600));
    }

    fn terms() -> Terms {
        Terms {
            per_minute: 10,
            ..Terms::base("EUR")
        }
    }

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn usage(from: &str, to: &str) -> Usage<'static> {
        Usage {
            started_at: at(from),
            until: at(to),
            pauses: &[],
            energy_wh: 0,
            tier: None,
        }
    }

    const BERLIN: Tz = chrono_tz::Europe::Berlin;

    #[test]
    fn time_is_rounded_up_to_the_billing_step() {
        let p = price(
            &terms(),
            BERLIN,
            usage("2026-01-05T10:00:00Z", "2026-01-05T10:45:01Z"),
        );
        assert_eq!(p.amount, 460, "45 min 1 s bills as 46 minutes at 10");
        let exact = price(
            &terms(),
            BERLIN,
            usage("2026-01-05T10:00:00Z", "2026-01-05T10:45:00Z"),
        );
        assert_eq!(exact.amount, 450);
    }

    #[test]
    fn the_free_period_is_free_and_then_deducted() {
        let t = Terms {
            free_minutes: 5,
            ..terms()
        };
        assert_eq!(
            price(
                &t,
                BERLIN,
                usage("2026-01-05T10:00:00Z", "2026-01-05T10:05:00Z")
            )
            .amount,
            0
        );
        assert_eq!(
            price(
                &t,
                BERLIN,
                usage("2026-01-05T10:00:00Z", "2026-01-05T10:05:01Z")
            )
            .amount,
            10
        );
        assert_eq!(
            price(
                &t,
                BERLIN,
                usage("2026-01-05T10:00:00Z", "2026-01-05T11:30:00Z")
            )
            .amount,
            850
        );
    }

    #[test]
    fn seed_004_example_prices_ninety_minutes_at_sixty_an_hour() {
        // 60 per hour = 1 per minute, 5 free minutes: 90 minutes cost 85.
        let t = Terms {
            per_minute: 1,
            free_minutes: 5,
            deposit: 500,
            ..terms()
        };
        let p = price(
            &t,
            BERLIN,
            usage("2025-11-29T10:00:00Z", "2025-11-29T11:30:00Z"),
        );
        assert_eq!(p.amount, 85);
        assert_eq!(p.lines[0].kind, "free_period");
    }

    #[test]
    fn sub_minute_rates_round_half_up_once_a_day() {
        // 1 minor unit per minute billed per second: 90 s = 1.5 → 2.
        let t = Terms {
            per_minute: 1,
            billing_step_secs: 1,
            ..terms()
        };
        assert_eq!(
            price(
                &t,
                BERLIN,
                usage("2026-01-05T10:00:00Z", "2026-01-05T10:01:30Z")
            )
            .amount,
            2
        );
        assert_eq!(
            price(
                &t,
                BERLIN,
                usage("2026-01-05T10:00:00Z", "2026-01-05T10:01:29Z")
            )
            .amount,
            1
        );
    }

    #[test]
    fn bands_apply_in_venue_local_time_and_may_wrap_midnight() {
        // Night band 22:00–06:00 Berlin at 2/min; day rate 10/min. 20:30–23:30 UTC in January is 21:30–00:30 local.
        let t = Terms {
            bands: vec![Band {
                from_minute: 22 * 60,
                to_minute: 6 * 60,
                per_minute: 2,
            }],
            ..terms()
        };
        let p = price(
            &t,
            BERLIN,
            usage("2026-01-05T20:30:00Z", "2026-01-05T23:30:00Z"),
        );
        // 30 min day (300) + 150 min night (300), split across two local days.
        assert_eq!(p.amount, 600);
        let days: Vec<&str> = p
            .lines
            .iter()
            .filter(|l| l.kind == "time")
            .map(|l| &l.description[..10])
            .collect();
        assert_eq!(days, ["2026-01-05", "2026-01-06"]);
    }

    #[test]
    fn the_daily_cap_applies_per_local_day() {
        let t = Terms {
            daily_cap: Some(5000),
            ..terms()
        };
        // 30 hours: day one capped at 5000, day two (6 h = 3600) under the cap. Berlin is UTC+1 in January.
        let p = price(
            &t,
            BERLIN,
            usage("2026-01-04T23:00:00Z", "2026-01-06T05:00:00Z"),
        );
        assert_eq!(p.amount, 5000 + 3600);
        assert!(p
            .lines
            .iter()
            .any(|l| l.kind == "daily_cap" && l.amount == -(14_400 - 5000)));
    }

    #[test]
    fn energy_minimum_and_tier_discount_are_explained() {
        let mut t = Terms {
            per_minute: 0,
            per_kwh: 35,
            minimum_charge: 100,
            ..terms()
        };
        t.tier_discounts_bp.insert("gold".into(), 1000);
        let mut u = usage("2026-01-05T10:00:00Z", "2026-01-05T11:00:00Z");
        u.energy_wh = 2_500;
        u.tier = Some("gold");
        let p = price(&t, BERLIN, u);
        // 2.5 kWh × 35 = 87.5 → 88; minimum 100; gold −10 % → 90.
        assert_eq!(p.amount, 90);
        let kinds: Vec<&str> = p.lines.iter().map(|l| l.kind.as_str()).collect();
        assert_eq!(kinds, ["energy", "minimum_charge", "tier_discount"]);
        assert_eq!(p.lines.iter().map(|l| l.amount).sum::<i64>(), p.amount);
        assert_eq!(p.lines[0].description, "2.500 kWh at 0.35/kWh");
    }

    #[test]
    fn nothing_used_costs_nothing() {
        let t = Terms {
            minimum_charge: 100,
            ..terms()
        };
        assert_eq!(
            price(
                &t,
                BERLIN,
                usage("2026-01-05T10:00:00Z", "2026-01-05T10:00:00Z")
            )
            .amount,
            0
        );
        assert_eq!(
            price(
                &t,
                BERLIN,
                usage("2026-01-05T10:00:00Z", "2026-01-05T09:00:00Z")
            )
            .amount,
            0
        );
    }

    #[test]
    fn incoherent_terms_are_refused_naming_the_field() {
        let bad = Terms {
            billing_step_secs: 0,
            ..terms()
        };
        assert!(matches!(
            bad.validate(),
            Err(Error::Validation {
                field: "billingStepSecs",
                ..
            })
        ));
        let bad = Terms {
            minimum_charge: 600,
            daily_cap: Some(500),
            ..terms()
        };
        assert!(matches!(
            bad.validate(),
            Err(Error::Validation {
                field: "minimumCharge",
                ..
            })
        ));
        let bad = Terms {
            currency: "eur".into(),
            ..terms()
        };
        assert!(bad.validate().is_err());
        assert!(terms().validate().is_ok());
        // Bounded lists: a day in quarter hours of bands, a hundred tiers.
        let band = |i: usize| Band {
            from_minute: (i * 15) as u16,
            to_minute: (i * 15 + 15) as u16 % 1440,
            per_minute: 1,
        };
        let day = Terms {
            bands: (0..MAX_BANDS).map(band).collect(),
            ..terms()
        };
        assert!(day.validate().is_ok());
        let bad = Terms {
            bands: (0..=MAX_BANDS).map(|i| band(i % MAX_BANDS)).collect(),
            ..terms()
        };
        assert!(matches!(
            bad.validate(),
            Err(Error::Validation { field: "bands", .. })
        ));
        let bad = Terms {
            tier_discounts_bp: (0..=MAX_TIER_DISCOUNTS)
                .map(|i| (format!("tier{i}"), 100))
                .collect(),
            ..terms()
        };
        assert!(matches!(
            bad.validate(),
            Err(Error::Validation {
                field: "tierDiscounts",
                ..
            })
        ));
    }

    fn arb_terms() -> impl Strategy<Value = Terms> {
        (
            0i64..500,
            0i64..100,
            0u32..30,
            prop_oneof![Just(1u32), Just(30), Just(60), Just(300), Just(900)],
            0i64..300,
            proptest::option::of(300i64..20_000),
            proptest::collection::vec((0u16..1440, 0u16..1440, 0i64..500), 0..3),
            0u32..=10_000,
        )
            .prop_map(
                |(per_minute, per_kwh, free, step, minimum, cap, bands, bp)| {
                    let mut t = Terms {
                        currency: "EUR".into(),
                        per_minute,
                        per_kwh,
                        free_minutes: free,
                        billing_step_secs: step,
                        minimum_charge: minimum,
                        daily_cap: cap.map(|c| c.max(minimum)),
                        deposit: 0,
                        buyout_threshold: None,
                        tier_discounts_bp: BTreeMap::from([("gold".to_string(), bp)]),
                        bands: bands
                            .into_iter()
                            .filter(|(f, t, _)| f != t)
                            .map(|(from_minute, to_minute, per_minute)| Band {
                                from_minute,
                                to_minute,
                                per_minute,
                            })
                            .collect(),
                        pausable: true,
                    };
                    t.bands.truncate(2);
                    t
                },
            )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        /// Ticks at any times charge the delta of the cumulative price; they always add up to the one-shot price.
        #[test]
        fn tick_charges_sum_to_the_one_shot_price(
            terms in arb_terms(),
            start_offset in 0i64..(400 * 86_400),
            ticks in proptest::collection::vec(1i64..7_200, 1..40),
            wh_per_tick in 0i64..5_000,
            gold in any::<bool>(),
        ) {
            let tz: Tz = if start_offset % 2 == 0 { chrono_tz::Europe::Berlin } else { chrono_tz::America::New_York };
            let start = at("2026-01-01T00:00:00Z") + Duration::seconds(start_offset);
            let tier = gold.then_some("gold");
            let mut now = start;
            let mut energy = 0;
            let mut charged = 0;
            let mut previous = 0;
            for step in &ticks {
                now += Duration::seconds(*step);
                energy += wh_per_tick;
                let cumulative = price(&terms, tz, Usage { started_at: start, pauses: &[], until: now, energy_wh: energy, tier }).amount;
                prop_assert!(cumulative >= previous, "price went down: {previous} -> {cumulative}");
                charged += cumulative - previous;
                previous = cumulative;
            }
            let one_shot = price(&terms, tz, Usage { started_at: start, pauses: &[], until: now, energy_wh: energy, tier });
            prop_assert_eq!(charged, one_shot.amount);
            prop_assert_eq!(one_shot.lines.iter().map(|l| l.amount).sum::<i64>(), one_shot.amount, "lines explain the total");
        }

        /// No local day's time charge exceeds the cap.
        #[test]
        fn caps_are_never_exceeded(terms in arb_terms(), hours in 1i64..100, start_offset in 0i64..(400 * 86_400)) {
            prop_assume!(terms.daily_cap.is_some());
            let start = at("2026-01-01T00:00:00Z") + Duration::seconds(start_offset);
            let p = price(&terms, chrono_tz::Europe::Berlin, Usage { started_at: start, pauses: &[], until: start + Duration::hours(hours), energy_wh: 0, tier: None });
            let cap = terms.daily_cap.unwrap_or_default();
            let mut day_totals: BTreeMap<String, i64> = BTreeMap::new();
            for line in p.lines.iter().filter(|l| l.kind == "time" || l.kind == "daily_cap") {
                *day_totals.entry(line.description[..10].to_string()).or_default() += line.amount;
            }
            for (day, total) in day_totals {
                prop_assert!(total <= cap, "{day}: {total} > {cap}");
            }
        }

        /// Pauses anywhere, ticks anywhere: the ticks still add up to the one-shot price of the same usage, and the
        /// price never goes down as time passes (paused or not).
        #[test]
        fn with_pauses_tick_charges_still_sum_to_the_one_shot_price(
            terms in arb_terms(),
            start_offset in 0i64..(400 * 86_400),
            steps in proptest::collection::vec((1i64..7_200, any::<bool>()), 1..40),
            gold in any::<bool>(),
        ) {
            let tz = chrono_tz::Europe::Berlin;
            let start = at("2026-01-01T00:00:00Z") + Duration::seconds(start_offset);
            let tier = gold.then_some("gold");
            let (mut now, mut charged, mut previous) = (start, 0, 0);
            let mut pauses: Vec<(DateTime<Utc>, DateTime<Utc>)> = Vec::new();
            let mut paused_at: Option<DateTime<Utc>> = None;
            for (step, toggle) in &steps {
                now += Duration::seconds(*step);
                if *toggle {
                    match paused_at.take() {
                        Some(from) => pauses.push((from, now)),
                        None => paused_at = Some(now),
                    }
                }
                let mut all = pauses.clone();
                all.extend(paused_at.map(|from| (from, now)));
                let cumulative = price(&terms, tz, Usage { started_at: start, until: now, pauses: &all, energy_wh: 0, tier }).amount;
                prop_assert!(cumulative >= previous, "price went down: {previous} -> {cumulative}");
                charged += cumulative - previous;
                previous = cumulative;
            }
            let mut all = pauses.clone();
            all.extend(paused_at.map(|from| (from, now)));
            let one_shot = price(&terms, tz, Usage { started_at: start, until: now, pauses: &all, energy_wh: 0, tier });
            prop_assert_eq!(charged, one_shot.amount);
            prop_assert_eq!(one_shot.lines.iter().map(|l| l.amount).sum::<i64>(), one_shot.amount, "lines explain the total");
        }

        /// At a flat rate without a cap, a paused session costs what the same active time costs unpaused.
        #[test]
        fn paused_time_is_never_billed(
            terms in arb_terms(),
            active in proptest::collection::vec(1i64..3_600, 1..6),
            gaps in proptest::collection::vec(1i64..3_600, 5),
        ) {
            // One-second steps: rounding is per active interval, so coarser steps may bill a started step twice.
            let terms = Terms { bands: vec![], daily_cap: None, billing_step_secs: 1, ..terms };
            let start = at("2026-03-01T08:00:00Z");
            let (mut now, mut pauses, mut total) = (start, Vec::new(), 0);
            for (i, secs) in active.iter().enumerate() {
                now += Duration::seconds(*secs);
                total += secs;
                if i + 1 < active.len() {
                    let resume = now + Duration::seconds(gaps[i]);
                    pauses.push((now, resume));
                    now = resume;
                }
            }
            let paused = price(&terms, BERLIN, Usage { started_at: start, until: now, pauses: &pauses, energy_wh: 0, tier: None });
            let straight = price(&terms, BERLIN, Usage { started_at: start, until: start + Duration::seconds(total), pauses: &[], energy_wh: 0, tier: None });
            prop_assert_eq!(paused.amount, straight.amount);
        }

        /// Inside the free period nothing is due, whatever else the tariff says (energy aside).
        #[test]
        fn the_free_period_is_respected(terms in arb_terms(), secs in 0i64..1800) {
            let start = at("2026-03-01T12:00:00Z");
            prop_assume!(secs <= i64::from(terms.free_minutes) * 60);
            let p = price(&terms, chrono_tz::Europe::Berlin, Usage { started_at: start, pauses: &[], until: start + Duration::seconds(secs), energy_wh: 0, tier: None });
            prop_assert_eq!(p.amount, 0);
        }
    }
}
