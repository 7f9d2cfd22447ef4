//! The tax in a gross amount. Venue prices include tax (a patron pays what the tariff says); a receipt or invoice
//! shows how much of it is tax at the venue's rate, in basis points (1900 = 19 %).
//!
//! Rounding: the net amount is `gross × 10000 / (10000 + rate)` rounded half away from zero to whole minor units,
//! and the tax is `gross − net`, so net + tax always equals the gross exactly. It is computed once per rate on the
//! document's total at that rate, never per line (per-line rounding would let the lines' taxes drift from the
//! total's). Integer arithmetic in i128: no floating point, no overflow.

/// The rate's highest value: 100 %.
pub const MAX_RATE_BP: i32 = 10_000;

/// Net and tax of a gross amount at `rate_bp` basis points.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Split {
    pub gross: i64,
    pub net: i64,
    pub tax: i64,
    pub rate_bp: i32,
}

/// Splits `gross` (tax included) at `rate_bp`. A rate outside 0..=10000 is treated as its nearest bound (the
/// database refuses such rates anyway).
pub fn split(gross: i64, rate_bp: i32) -> Split {
    let rate = i128::from(rate_bp.clamp(0, MAX_RATE_BP));
    let numerator = i128::from(gross) * 10_000;
    let denominator = 10_000 + rate;
    let net = div_round_half_away(numerator, denominator);
    // |net| <= |gross|, so it fits an i64.
    let net = i64::try_from(net).unwrap_or(gross);
    Split {
        gross,
        net,
        tax: gross - net,
        rate_bp: rate_bp.clamp(0, MAX_RATE_BP),
    }
}

fn div_round_half_away(n: i128, d: i128) -> i128 {
    let q = n / d;
    let r = n % d;
    if 2 * r.abs() >= d {
        q + n.signum()
    } else {
        q
    }
}

/// A rate as people write it: `19%`, `7.5%`, `0%`.
pub fn format_rate(rate_bp: i32) -> String {
    let whole = rate_bp / 100;
    let frac = rate_bp % 100;
    if frac == 0 {
        format!("{whole}%")
    } else if frac % 10 == 0 {
        format!("{whole}.{}%", frac / 10)
    } else {
        format!("{whole}.{frac:02}%")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn nineteen_percent_of_a_gross_price_rounds_half_away_from_zero() {
        // 11.90 at 19 %: net 10.00, tax 1.90 exactly.
        assert_eq!(split(1190, 1900).tax, 190);
        // 1.00 at 19 %: net 84.03… → 84, tax 16.
        assert_eq!(
            split(100, 1900),
            Split {
                gross: 100,
                net: 84,
                tax: 16,
                rate_bp: 1900
            }
        );
        // 0.05 at 7 %: net 4.672… → 5, tax 0.
        assert_eq!(split(5, 700).tax, 0);
        // Exactly half: 10500 × 10000 / 21000 = 5000 → no rounding; 1 at 100 %: 0.5 → 1 (half away), tax 0.
        assert_eq!(split(1, 10_000).net, 1);
        assert_eq!(split(-1, 10_000).net, -1);
        // A refund (negative) mirrors the charge.
        assert_eq!(split(-100, 1900).tax, -16);
        assert_eq!(split(0, 1900).tax, 0);
        assert_eq!(split(2500, 0).tax, 0);
    }

    #[test]
    fn rates_are_written_as_people_write_them() {
        assert_eq!(format_rate(1900), "19%");
        assert_eq!(format_rate(750), "7.5%");
        assert_eq!(format_rate(1), "0.01%");
        assert_eq!(format_rate(0), "0%");
    }

    proptest! {
        #[test]
        fn net_and_tax_add_up_to_the_gross_and_tax_is_never_more_than_the_rate_allows(
            gross in -1_000_000_000_000i64..1_000_000_000_000, rate in 0i32..=10_000
        ) {
            let s = split(gross, rate);
            prop_assert_eq!(s.net + s.tax, gross);
            prop_assert_eq!(s.tax.signum() * gross.signum() >= 0, true);
            // The exact tax is gross × rate / (10000 + rate); ours is within half a minor unit of it.
            let exact_times_d = i128::from(gross) * i128::from(rate);
            let d = 10_000 + i128::from(rate);
            prop_assert!((i128::from(s.tax) * d - exact_times_d).abs() * 2 <= d);
        }
    }
}
